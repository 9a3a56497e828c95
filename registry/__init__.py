"""The registry: communities, their grids, buildings and devices, in SQL (see README.md)."""
