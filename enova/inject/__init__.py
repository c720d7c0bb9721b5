"""Request injection: realistic load from LoadProfile specs, measured per request and judged
against SLOs. `arrivals` makes the schedule, `requests` the request bodies, `runner` sends them
open-loop on absolute deadlines and measures, `results` aggregates, `report` renders HTML."""
