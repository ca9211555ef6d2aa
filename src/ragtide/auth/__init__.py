"""Identity at the edge: API keys, JWTs and the authenticator that turns either into a
``Principal`` (see ``ragtide.types``). Decisions about what a principal may do live in
the core (``ragtide.access``, ``ragtide.tenants``)."""
