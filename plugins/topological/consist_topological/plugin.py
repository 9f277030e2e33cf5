"""Entry point of the topological plugin (group `consist`).

The plugin is registered through the same entry-point group a third party uses.
Its checkers are not implemented yet (see the project's issues); until then it
implements no hooks, and `consist plugins` lists it with none.
"""
