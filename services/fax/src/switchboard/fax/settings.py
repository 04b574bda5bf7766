from __future__ import annotations

from pydantic import Field, model_validator

from switchboard.core import quarantine
from switchboard.core.events import TENANT_RE
from switchboard.core.settings import ServiceSettings


def parse_upload_secrets(text: str) -> dict[str, str]:
    """`tenant=secret,tenant=secret` as {tenant: secret}; ValueError naming the fault."""
    secrets: dict[str, str] = {}
    for item in (i.strip() for i in text.split(",")):
        if not item:
            continue
        tenant, eq, secret = (part.strip() for part in item.partition("="))
        if not eq or not secret:
            raise ValueError(f"FAX_WEBHOOK_SECRETS: {tenant!r} is not tenant=secret")
        if not TENANT_RE.match(tenant):
            raise ValueError(f"FAX_WEBHOOK_SECRETS: {tenant!r} is not a tenant name")
        if tenant in secrets:
            raise ValueError(f"FAX_WEBHOOK_SECRETS: {tenant} appears twice")
        secrets[tenant] = secret
    by_secret: dict[str, list[str]] = {}
    for tenant, secret in secrets.items():
        by_secret.setdefault(secret, []).append(tenant)
    for tenants in by_secret.values():
        if len(tenants) > 1:  # the secret is what names the tenant: it must be one tenant's
            raise ValueError(f"FAX_WEBHOOK_SECRETS: {' and '.join(sorted(tenants))} share a secret")
    return secrets


class FaxSettings(ServiceSettings):
    grpc_port: int = Field(50056, alias="FAX_GRPC_PORT")
    consumer_name: str = Field("fax", alias="FAX_CONSUMER")
    # The tenant faxes from the hook, the spool and uploads without a tenant belong to.
    tenant: str = Field("demo", alias="FAX_TENANT")
    # HTTP upload (providers' webhooks): multipart, signed with a tenant's secret, which makes
    # the upload that tenant's: FAX_WEBHOOK_SECRETS="demo=...,acme=..."; the older single
    # FAX_WEBHOOK_SECRET is FAX_TENANT's secret.
    http_host: str = Field("127.0.0.1", alias="FAX_HTTP_HOST")
    http_port: int = Field(8095, alias="FAX_HTTP_PORT")
    webhook_secrets: str = Field("", alias="FAX_WEBHOOK_SECRETS")
    webhook_secret: str = Field("", alias="FAX_WEBHOOK_SECRET")
    webhook_max_skew_seconds: float = Field(300.0, alias="FAX_WEBHOOK_MAX_SKEW_SECONDS")
    # HTTPS for the upload when both are set (PEM files, e.g. a cert-manager Secret's).
    tls_cert_file: str = Field("", alias="FAX_TLS_CERT_FILE")
    tls_key_file: str = Field("", alias="FAX_TLS_KEY_FILE")
    # The watched spool directory ("" watches none).
    spool_dir: str = Field("", alias="FAX_SPOOL_DIR")
    spool_poll_seconds: float = Field(1.0, alias="FAX_SPOOL_POLL_SECONDS")
    spool_settle_seconds: float = Field(0.5, alias="FAX_SPOOL_SETTLE_SECONDS")
    # Email-to-fax: mails to (or from) these addresses with a TIFF/PDF attachment are faxes;
    # comma-separated; "*" takes every email with one; "" turns email intake off.
    email_addresses: str = Field("", alias="FAX_EMAIL_ADDRESSES")
    bucket: str = Field("fax-documents", alias="FAX_BUCKET")
    quarantine_bucket: str = Field("fax-quarantine", alias="FAX_QUARANTINE_BUCKET")
    # A quarantined fax is deleted this many days after it came (sooner when its sender is
    # erased); FAX_QUARANTINE_RETENTION_TENANTS="acme=7,demo=90" sets a tenant's own.
    quarantine_retention_days: float = Field(30.0, alias="FAX_QUARANTINE_RETENTION_DAYS")
    quarantine_retention_tenants: str = Field("", alias="FAX_QUARANTINE_RETENTION_TENANTS")
    quarantine_sweep_seconds: float = Field(3600.0, alias="FAX_QUARANTINE_SWEEP_SECONDS")
    # Limits.
    max_bytes: int = Field(20 * 1024 * 1024, alias="FAX_MAX_BYTES")
    max_pages: int = Field(50, alias="FAX_MAX_PAGES")
    max_page_pixels: int = Field(40_000_000, alias="FAX_MAX_PAGE_PIXELS")
    max_total_pixels: int = Field(400_000_000, alias="FAX_MAX_TOTAL_PIXELS")
    pdf_dpi: float = Field(200.0, alias="FAX_PDF_DPI")
    # Reading.
    ocr_workers: int = Field(2, alias="FAX_OCR_WORKERS")
    tesseract: str = Field("tesseract", alias="FAX_TESSERACT")
    ocr_scripts: str = Field("", alias="FAX_OCR_SCRIPTS")  # e.g. Han=chi_tra+eng; "" = defaults
    ocr_fallback: str = Field("kor+chi_sim+chi_tra+jpn+eng", alias="FAX_OCR_FALLBACK")
    ocr_timeout_seconds: float = Field(120.0, alias="FAX_OCR_TIMEOUT_SECONDS")
    rules_file: str = Field("", alias="FAX_RULES_FILE")
    default_region: str = Field("KR", alias="FAX_DEFAULT_REGION")
    # Replies.
    font: str = Field("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", alias="FAX_FONT")
    reply_format: str = Field("tiff", alias="FAX_REPLY_FORMAT")  # tiff (G4) or pdf
    hylafax_host: str = Field("", alias="FAX_HYLAFAX_HOST")
    hylafax_port: int = Field(4559, alias="FAX_HYLAFAX_PORT")
    hylafax_user: str = Field("switchboard", alias="FAX_HYLAFAX_USER")
    hylafax_password: str = Field("", alias="FAX_HYLAFAX_PASSWORD")
    hylafax_kill_minutes: int = Field(179, alias="FAX_HYLAFAX_KILL_MINUTES")
    hylafax_max_tries: int = Field(3, alias="FAX_HYLAFAX_MAX_TRIES")
    send_attempts: int = Field(3, alias="FAX_SEND_ATTEMPTS")
    status_poll_seconds: float = Field(10.0, alias="FAX_STATUS_POLL_SECONDS")
    status_poll_limit: int = Field(360, alias="FAX_STATUS_POLL_LIMIT")

    @model_validator(mode="after")
    def _one_secret_per_tenant(self) -> FaxSettings:
        self.upload_secrets  # noqa: B018 - a mistake in the secrets stops the service at start
        self.quarantine_retention  # noqa: B018 - and so does one in the retention
        return self

    @property
    def quarantine_retention(self) -> quarantine.Retention:
        """How long each tenant's quarantined faxes are kept."""
        return quarantine.parse_retention(
            self.quarantine_retention_days,
            self.quarantine_retention_tenants,
            "FAX_QUARANTINE_RETENTION_TENANTS",
        )

    @property
    def upload_secrets(self) -> dict[str, str]:
        """{tenant: secret} for the HTTP upload."""
        secrets = parse_upload_secrets(self.webhook_secrets)
        if self.webhook_secret:
            if self.tenant in secrets:
                raise ValueError(
                    f"FAX_WEBHOOK_SECRET and FAX_WEBHOOK_SECRETS both give {self.tenant}'s secret"
                )
            if self.webhook_secret in secrets.values():
                raise ValueError("FAX_WEBHOOK_SECRET is also another tenant's secret")
            secrets[self.tenant] = self.webhook_secret
        return secrets
