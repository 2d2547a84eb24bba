"""The administrators' web portal (issue 15): Starlette pages over AdminService.

``python -m portal --server HOST:PORT`` serves it on its own; ``python -m server
--http-listen HOST:PORT`` beside the gRPC port. See docs/portal.md.
"""
