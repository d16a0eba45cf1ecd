"""The broker's configuration file (TOML), as typed models.

``stratus config example broker`` prints a commented example
(:data:`EXAMPLE_BROKER_CONFIG`); ``docs/federation.md`` explains every section.
Unknown keys are errors (a typo must not silently change policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from auth.config import AuthConfig, CrlPolicy
from core.config import StrictModel
from federation.bursting import BurstAction, BurstPolicy
from federation.model import CloudSize, PublicCloudConfig
from federation.placement import RankWeights
from federation.providers.retry import RetryPolicy

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class RetrySection(StrictModel):
    """Retries of idempotent broker -> site/cloud calls (exponential backoff)."""

    attempts: int = Field(default=4, ge=1, le=20)
    initial_wait_seconds: float = Field(default=0.2, ge=0)
    max_wait_seconds: float = Field(default=5.0, ge=0)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            attempts=self.attempts,
            initial_wait=self.initial_wait_seconds,
            max_wait=self.max_wait_seconds,
        )


class BrokerSection(StrictModel):
    name: str = Field(default="broker", pattern=NAME_PATTERN)
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=8450, ge=0, le=65535)
    state_dir: Path = Path("/var/lib/stratus/broker")
    database_url: str | None = None  # default: SQLite file in state_dir
    heartbeat_timeout_seconds: float = Field(default=90.0, gt=0)
    monitor_interval_seconds: float = Field(default=5.0, gt=0)
    site_timeout_seconds: float = Field(default=10.0, gt=0)
    list_timeout_seconds: float = Field(default=5.0, gt=0)
    attempt_timeout_seconds: float = Field(default=60.0, gt=0)
    max_candidates: int = Field(default=5, ge=1, le=100)
    max_count_per_request: int = Field(default=20, ge=1, le=100)
    orphan_grace_seconds: float = Field(default=120.0, ge=0)
    orphan_sweep_interval_seconds: float = Field(default=60.0, gt=0)
    retry: RetrySection = Field(default_factory=RetrySection)


class TlsSection(StrictModel):
    """The broker's HTTPS listener. Client certificates (sites; users when
    ``[auth.x509]`` is enabled) are verified in the TLS handshake against ``ca_dir``."""

    cert: Path
    key: Path
    ca_dir: Path
    crl_policy: CrlPolicy = CrlPolicy.STRICT


class SiteClientSection(StrictModel):
    """How the broker calls the sites' APIs over HTTPS."""

    ca_file: Path | None = None  # trusted CAs for the sites' server certificates
    ca_dir: Path | None = None  # the same as an OpenSSL hashed directory
    cert: Path | None = None  # a client certificate the broker presents to sites
    key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> SiteClientSection:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        return self


class TrustedSite(StrictModel):
    """A site allowed to register: its certificate DN, and the broker's token at the site.

    The token (plain text, or in ``token_file``) authenticates the broker's
    own account to the site's API (its background work, e.g. the orphan
    sweep); the site stores only its hash, with ``admin = true``. Calls made
    for a user are signed delegations instead (``[tls]``).
    """

    name: str = Field(pattern=NAME_PATTERN)
    dn: str = Field(min_length=3)
    token: str | None = Field(default=None, min_length=8, repr=False)
    token_file: Path | None = None

    @model_validator(mode="after")
    def _one_token(self) -> TrustedSite:
        if (self.token is None) == (self.token_file is None):
            raise ValueError("give exactly one of token and token_file")
        return self

    def api_token(self) -> str:
        """The token, read from ``token_file`` when that is how it is given."""
        if self.token is not None:
            return self.token
        assert self.token_file is not None
        return self.token_file.read_text().strip()


class CloudSizeConfig(StrictModel):
    size_id: str = Field(min_length=1)
    vcpus: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    price_per_hour: float = Field(ge=0)


class CloudConfig(StrictModel):
    """A public cloud for bursting, reached through a libcloud driver (EC2)."""

    name: str = Field(pattern=NAME_PATTERN)
    driver: Literal["ec2"] = "ec2"
    key: str = ""
    secret: str = Field(default="", repr=False)
    secret_file: Path | None = None
    region: str = "us-east-1"
    host: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    secure: bool = True
    images: dict[str, str] = Field(default_factory=dict)
    sizes: dict[str, CloudSizeConfig] = Field(default_factory=dict)

    def public_cloud(self, *, read_secret: bool = True) -> PublicCloudConfig:
        """The library's view of this cloud (``read_secret=False``: without the secret,
        enough for the burst policy)."""
        secret = self.secret
        if read_secret and self.secret_file is not None:
            secret = self.secret_file.read_text().strip()
        return PublicCloudConfig(
            name=self.name,
            driver=self.driver,
            key=self.key,
            secret=secret,
            region=self.region,
            host=self.host,
            port=self.port,
            secure=self.secure,
            images=dict(self.images),
            sizes={
                name: CloudSize(s.size_id, s.vcpus, s.memory_mib, s.price_per_hour)
                for name, s in self.sizes.items()
            },
        )


class BurstingSection(StrictModel):
    """Who may burst to the public clouds, and within which budget."""

    allow_everyone: bool = False
    allowed_users: list[str] = Field(default_factory=list)
    allowed_vos: list[str] = Field(default_factory=list)
    budget_per_period: float = Field(default=0.0, ge=0)
    period_seconds: float = Field(default=30 * 24 * 3600.0, gt=0)
    default_hours: float = Field(default=1.0, gt=0)
    when_denied: Literal["reject", "queue"] = "reject"


class QueueSection(StrictModel):
    """The deferred queue: how long requests may wait, and the start order."""

    default_deadline_seconds: float = Field(default=3600.0, gt=0)
    max_deadline_seconds: float = Field(default=7 * 24 * 3600.0, gt=0)
    max_priority: int = Field(default=10, ge=0)
    backfill: bool = True


class RankingSection(StrictModel):
    """Placement rank weights (see docs/federation-library.md)."""

    free_capacity: float = Field(default=1.0, ge=0)
    price: float = Field(default=1.0, ge=0)
    image_cached: float = Field(default=0.5, ge=0)
    data_locality: float = Field(default=2.0, ge=0)
    user_preference: float = Field(default=3.0, ge=0)

    def weights(self) -> RankWeights:
        return RankWeights(
            free_capacity=self.free_capacity,
            price=self.price,
            image_cached=self.image_cached,
            data_locality=self.data_locality,
            user_preference=self.user_preference,
        )


class BrokerConfig(StrictModel):
    broker: BrokerSection = Field(default_factory=BrokerSection)
    tls: TlsSection | None = None
    auth: AuthConfig = Field(default_factory=AuthConfig)
    site_client: SiteClientSection = Field(default_factory=SiteClientSection)
    trusted_sites: list[TrustedSite] = Field(default_factory=list)
    clouds: list[CloudConfig] = Field(default_factory=list)
    bursting: BurstingSection = Field(default_factory=BurstingSection)
    queue: QueueSection = Field(default_factory=QueueSection)
    ranking: RankingSection = Field(default_factory=RankingSection)

    @field_validator("trusted_sites")
    @classmethod
    def _unique_sites(cls, sites: list[TrustedSite]) -> list[TrustedSite]:
        for what, values in (("name", [s.name for s in sites]), ("dn", [s.dn for s in sites])):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"duplicate site {what}: {', '.join(dupes)}")
        return sites

    @model_validator(mode="after")
    def _names_apart(self) -> BrokerConfig:
        clouds = [c.name for c in self.clouds]
        dupes = sorted({c for c in clouds if clouds.count(c) > 1})
        if dupes:
            raise ValueError(f"duplicate cloud names: {', '.join(dupes)}")
        both = sorted(set(clouds) & {s.name for s in self.trusted_sites})
        if both:
            raise ValueError(f"names used by a site and a cloud: {', '.join(both)}")
        return self

    @property
    def database_url(self) -> str:
        return self.broker.database_url or f"sqlite:///{self.broker.state_dir / 'broker.db'}"

    def check_files(self) -> list[str]:
        """Problems reading the token and secret files (empty when every file is readable)."""
        problems = []
        for site in self.trusted_sites:
            if site.token_file is not None and not _readable(site.token_file):
                problems.append(f"trusted_sites {site.name}: cannot read {site.token_file}")
        for cloud in self.clouds:
            if cloud.secret_file is not None and not _readable(cloud.secret_file):
                problems.append(f"clouds {cloud.name}: cannot read {cloud.secret_file}")
        return problems

    def burst_policy(self) -> BurstPolicy:
        b = self.bursting
        return BurstPolicy(
            clouds=tuple(c.public_cloud(read_secret=False) for c in self.clouds),
            allowed_users=frozenset(b.allowed_users),
            allowed_vos=frozenset(b.allowed_vos),
            allow_everyone=b.allow_everyone,
            budget_per_period=b.budget_per_period,
            period_seconds=b.period_seconds,
            default_hours=b.default_hours,
            when_denied=BurstAction(b.when_denied),
        )


def _readable(path: Path) -> bool:
    try:
        path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    return True


EXAMPLE_BROKER_CONFIG = """\
# Stratus broker configuration (TOML). Reference: docs/federation.md

[broker]
name = "broker"
listen_host = "127.0.0.1"
listen_port = 8450                  # 0 = let the OS choose
state_dir = "/var/lib/stratus/broker"   # SQLite database (default) and logs
# database_url = "postgresql://stratus@127.0.0.1:5432/broker"  # for several replicas
heartbeat_timeout_seconds = 90      # a site silent this long is unavailable; its VMs `unknown`
monitor_interval_seconds = 5        # queue, expiry and staleness checks
site_timeout_seconds = 10           # one HTTP call to a site
list_timeout_seconds = 5            # a site slower than this is left out of a listing (warning)
attempt_timeout_seconds = 60        # one create attempt at one site, retries included
max_candidates = 5                  # sites tried in rank order before giving up
orphan_grace_seconds = 120          # a VM at a site that the broker does not know is killed
                                    # after this long (a create cut off mid-way)

[broker.retry]                      # idempotent broker -> site/cloud calls
attempts = 4
initial_wait_seconds = 0.2
max_wait_seconds = 5

# HTTPS listener. Sites register over mutual TLS: their certificate must
# verify against ca_dir and its DN be listed in [[trusted_sites]]. cert and
# key also sign the delegation assertions with which the broker acts at a
# site for the user it authenticated (the site checks them against its
# [federation] ca; docs/authentication.md).
[tls]
cert = "/etc/grid-security/hostcert.pem"
key = "/etc/grid-security/hostkey.pem"
ca_dir = "/etc/grid-security/certificates"
crl_policy = "strict"

# How the broker calls the sites' APIs (HTTPS verification, optional client cert).
[site_client]
# ca_file = "/etc/stratus/site-cas.pem"

# One entry per site allowed to join. `token` is the broker's own API token
# at that site (the site config holds its hash, with admin = true), used for
# the broker's background work (the orphan sweep); calls made for users are
# made as those users.
[[trusted_sites]]
name = "site-a"
dn = "/DC=org/DC=example/CN=site-a.example.org"
token_file = "/etc/stratus/broker/site-a.token"

# Public clouds for bursting (libcloud EC2 driver; any EC2 endpoint).
[[clouds]]
name = "aws"
driver = "ec2"
key = "AKIA..."
secret_file = "/etc/stratus/broker/aws.secret"
region = "eu-west-3"
images = { busybox = "ami-0123456789abcdef0" }

[clouds.sizes."m1.small"]
size_id = "t3.micro"
vcpus = 2
memory_mib = 1024
price_per_hour = 0.0118

[bursting]
allow_everyone = false
allowed_users = []
allowed_vos = ["atlas"]
budget_per_period = 100.0           # in the clouds' currency
period_seconds = 2592000            # 30 days, rolling
default_hours = 1                   # assumed run time when a request does not say
when_denied = "reject"              # or "queue": wait for federation capacity instead

[queue]
default_deadline_seconds = 3600     # a queued request expires after this
max_deadline_seconds = 604800
max_priority = 10                   # users may ask for priority 0..max_priority
backfill = true                     # small requests may start before a big one that waits

[ranking]                           # placement weights
free_capacity = 1.0
price = 1.0
image_cached = 0.5
data_locality = 2.0
user_preference = 3.0

# How users log in (same section as the site agent; docs/authentication.md).
[[auth.tokens]]
token_hash = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
account = "alice"
"""
