"""consist's own default plugins: loaded like any plugin, always present."""
