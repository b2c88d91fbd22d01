"""The memodag quick start: a small weather pipeline with a fan-out, run on embedded defaults.

    memodag job execute -f examples/quickstart/weather.py          # first run: every step executes
    memodag job execute -f examples/quickstart/weather.py          # again: every step is memoized
    memodag job list-versions -f examples/quickstart/weather.py -c examples/quickstart/more_days.yaml

Stations are discovered at run time (a dynamic output); each is cleaned and summarized on its
own (``clean[station_3]``), and a report collects them. Outputs are pickled files under
``./.memodag/storage``; runs, events and the output index live in ``./.memodag/instance.db``.
"""

import random
import statistics

from memodag import DynamicOut, DynamicOutput, Field, SourceHashVersionStrategy, job, op

OUTLIER_LIMIT_C = 60.0  # readings above this are sensor faults


@op(
    out=DynamicOut(),
    config_schema={
        "stations": Field(int, default_value=6, description="How many stations report."),
        "days": Field(int, default_value=30, description="Days of hourly readings per station."),
    },
)
def station_readings(context):
    """One piece per station: its hourly temperatures (synthetic and reproducible)."""
    for index in range(context.op_config["stations"]):
        rng = random.Random(index)
        base = rng.uniform(-5, 25)
        readings = [round(base + rng.gauss(0, 4), 2) for _ in range(24 * context.op_config["days"])]
        if index % 3 == 0:
            readings[rng.randrange(len(readings))] = 999.0  # a faulty sensor reading
        yield DynamicOutput(readings, mapping_key=f"station_{index}")


@op
def clean(context, readings: list[float]) -> list[float]:
    kept = [r for r in readings if abs(r) <= OUTLIER_LIMIT_C]
    if len(kept) != len(readings):
        context.log.info(f"dropped {len(readings) - len(kept)} faulty reading(s)")
    return kept


@op
def summarize(context, readings: list[float]) -> dict:
    return {
        "station": context.mapping_key,
        "mean": round(statistics.fmean(readings), 2),
        "min": min(readings),
        "max": max(readings),
    }


@op
def report(context, summaries: list[dict]) -> str:
    lines = [
        f"{s['station']:<12} mean {s['mean']:>6}  min {s['min']:>6}  max {s['max']:>6}"
        for s in summaries
    ]
    text = "\n".join(lines)
    context.log.info("report:\n" + text)
    return text


@job(version_strategy=SourceHashVersionStrategy())
def weather():
    summaries = station_readings().map(lambda readings: summarize(clean(readings)))
    report(summaries.collect())
