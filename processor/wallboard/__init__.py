"""The queue wallboard (`processor wallboard`): one page of big tiles per queue and media type,
refreshed from the metrics table every 2 s. `board` builds what the page shows (pure), `server`
serves it read-only; the page itself is `static/` (plain HTML, CSS and JS: no build step, no CDN).
"""
