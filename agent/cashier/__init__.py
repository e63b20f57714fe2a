"""The cashier screen: a page on the till where a cashier gives a receipt to an e-mail address and
sees what became of each scan at this till (`cashier.listen`, loopback by default).

`access` decides who may use it, `outcomes` turns the store and the refused scans into the feed,
`server` serves the page (static files in `static/`) and its small JSON API.
"""
