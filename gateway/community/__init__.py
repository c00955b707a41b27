"""The community's page: what is in force, what a proposal would change, and what it would do.

- ``page.py``       the routes: ``/community`` (HTML) and ``/transparency/...`` (JSON)
- ``proposals.py``  the registry's versions and the governor's proposals, read over JSON-RPC
- ``bundles.py``    bundles by digest, for the diff and the shadow (verified before use)
- ``rules.py``      a bundle as people read it: deny rules, their reasons, the data as tables
- ``diff.py``       a file-by-file diff of two bundles
- ``shadow.py``     proposals judged beside the version in force, on sampled live traffic
- ``charts.py``     small SVG bar charts, rendered on the server
- ``templates/``    the page (Jinja2)
"""
