"""The storefront demonstrator: a small web shop that calls the gateway's public REST API the
way a retailer's site would (server-side rendering with FastAPI + Jinja2, its own process and
port: ``shoprec storefront``). It imports no other shoprec package (import-linter contract).
"""
