"""The ``consist`` command line (click). Plugins add commands via ``consist_register_commands``."""
