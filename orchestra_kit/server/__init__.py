"""The HTTP API: aiohttp application factory, routes, middleware, OpenAPI."""

from .app import STATE, Service, create_app

__all__ = ["STATE", "Service", "create_app"]
