"""Hooks: the plugin contract, frozen views, the typed outbox, dispatch, time hooks and
suggestions.

`spec` and `views` are the plugin contract (re-exported as `tmcaldav.hookspecs` and
`tmcaldav.views`) and load no database code; the `Dispatcher` in `dispatch` is the
service that runs them. This package's `__init__` imports nothing, so importing the
contract stays cheap.
"""
