"""Routes: what a client calls, declared in the routes file and built against Triton's model metadata.

* ``schema`` — the routes file (TOML): its pydantic schema and loader;
* ``table`` — the table of built routes and ``build_routes``;
* ``base`` — what every kind shares (``Route``, ``RouteDescription``, op chains, pre-processing);
* ``single`` — one model; ``step`` — one model call of a composite route;
* ``composite`` — what serial, parallel and progressive share; ``serial``, ``parallel``, ``progressive`` — the kinds.
"""
