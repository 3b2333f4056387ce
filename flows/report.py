"""Prefect flow ``report``: a thin shell over ``pipeline.report.build.build_report`` that publishes a
link artifact to the page.  ``refresh_report`` is what the generate and evaluate flows call."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact

from pipeline.report.build import ReportResult, build_report


@flow(name="report")
def report_flow(run: str, out: str, jobs: list[str] | None = None, data: str | None = None,
                evaluation: str | None = None) -> str:
    """Write the listening report of a run (and its jobs, and real clips from ``data``); returns index.html."""
    result = build_report(run, out, jobs=jobs or [], data_dir=data, evaluation=evaluation)
    publish_report(result, key="report")
    return str(result.index)


def publish_report(result: ReportResult, key: str) -> None:
    """A link artifact to the report's index.html (the path is in the text: a browser does not open
    ``file://`` links from a Prefect server's page, but the path can be pasted)."""
    create_link_artifact(link=result.index.resolve().as_uri(), link_text=result.line(), key=key,
                         description="static listening page: open index.html in a browser")


def refresh_report(run, out, key: str, jobs=(), data=None) -> ReportResult | None:
    """Rebuild a report and link it; a failure is logged, never costs the calling flow its work."""
    logger = get_run_logger()
    try:
        result = build_report(run, out, jobs=[str(j) for j in jobs], data_dir=data)
        publish_report(result, key=key)
    except Exception as e:  # noqa: BLE001 - the report is a view of finished work
        logger.warning(f"report not written ({type(e).__name__}: {e})")
        return None
    logger.info(result.line())
    return result


def default_report_dir(folder) -> Path:
    """Where a flow writes the report of the folder it filled: ``<folder>/report``."""
    return Path(folder) / "report"
