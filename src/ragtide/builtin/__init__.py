"""Reference components, registered through Ragtide's own entry points."""
