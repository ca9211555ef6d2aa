"""The HTTP edge: translates requests to core calls and core errors to responses."""
