"""Thin routers of the infrastructure endpoints; the model endpoints are added beside them."""
