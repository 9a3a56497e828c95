"""``python -m dashboards``: regenerate dashboards/generated/*.json (``make dashboards``)."""

from dashboards.build import write

for path in write():
    print(path)
