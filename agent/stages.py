"""The daemon's stages, each built once from its typed config section (docs/architecture.md):
the scanner sources, the POS poller, the webhook receiver, the uploader."""

from __future__ import annotations

from collections.abc import Callable

from agent.config import Config
from agent.errors import ScannerError
from agent.http import cleartext
from agent.kassa.client import KassaClient
from agent.kassa.poller import Poller
from agent.kassa.webhooks import Receiver, ReceiverEvents
from agent.logs import fields, get_logger
from agent.metrics import Metrics
from agent.queue.store import Store
from agent.queue.uploader import Uploader
from agent.reporter import Reporter
from agent.scanner import build_source
from agent.scanner.base import Source

log = get_logger(__name__)


def sources(config: Config, metrics: Metrics) -> tuple[list[Source], list[str]]:
    """Every source that can run here, and the names of those that cannot (each logged)."""
    built, unbuilt = [], []
    for scanner in config.scanners:
        try:
            built.append(build_source(scanner))
        except ScannerError as exc:
            unbuilt.append(f"{scanner.type}:{scanner.device or '-'}")
            metrics.scanner_up(f"{scanner.type}:{scanner.device}", False)
            log.error(
                "scanner source cannot start",
                extra=fields(type=scanner.type, device=scanner.device, reason=str(exc)),
            )
    return built, unbuilt


def poller(config: Config, store: Store, reporter: Reporter, clock: Callable[[], float]) -> Poller:
    kassa = config.kassa
    client = KassaClient(
        kassa.url,
        kassa.ident,
        config.kassa_secret,
        timeout=kassa.timeout,
        verify=str(kassa.ca_bundle) if kassa.ca_bundle else True,
        proxy=kassa.proxy,
    )
    if cleartext(kassa.url):  # allowed by kassa.allow_http, else the config refused it
        log.warning(
            "kassa.allow_http: the POS secret and receipts travel in clear on the "
            "shop network; prefer https:// if the POS API offers it"
        )
    return Poller(
        client,
        store,
        merchant_id=config.store.merchant_id,
        branch=config.store.branch,
        matching=config.matching,
        interval=kassa.poll_interval,
        batch=kassa.batch,
        store_name=config.store.name,
        events=reporter,
        clock=clock,
        webhooks=kassa.webhooks is not None,
    )


def receiver(config: Config, store: Store, events: ReceiverEvents) -> Receiver | None:
    """The webhook source (kassa.webhooks); its key is read now, so a missing one stops the
    start (exit 78) rather than refusing every request of the till."""
    if config.kassa.webhooks is None:
        return None
    config.webhook_key()
    return Receiver(config, store, config.webhook_key, events)


def uploader(
    config: Config, store: Store, reporter: Reporter, beat: Callable[[], None]
) -> Uploader:
    cloud = config.cloud
    return Uploader(
        store,
        cloud.url,
        config.cloud_token,
        ca_bundle=str(cloud.ca_bundle) if cloud.ca_bundle else None,
        timeout=cloud.timeout,
        proxy=cloud.proxy,
        workers=cloud.workers,
        base_delay=cloud.retry_base,
        max_delay=cloud.retry_max,
        on_delivered=reporter.delivered,
        on_pass=beat,
        on_outcome=reporter.uploaded,
    )
