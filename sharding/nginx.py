"""Rendering the nginx entry point from the shard file, and driving that nginx.

The template is nginx/reactions.conf.template; ``{{name}}`` placeholders are
filled here, and every one of them must be.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from sharding.config import ConfigError, Topology
from sharding.sockets import writer_server

TEMPLATE = Path(__file__).resolve().parent.parent / "nginx" / "reactions.conf.template"
# The dashboard's static files in this repository (served at / by nginx).
DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
# Where the nginx image has them (docker/nginx/Dockerfile).
DASHBOARD_IN_CONTAINER = "/usr/share/reactions/dashboard"
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
NGINX_BIN = "/usr/sbin/nginx"
# The njs module (the GET cache's keys): Debian's libnginx-mod-http-js installs it
# here, and the official nginx image has it at the same path (its modules path;
# /etc/nginx/modules links there).
JS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"
# The cache keys' njs code, in this repository; the nginx image has it at JS_IN_IMAGE
# (docker/nginx/Dockerfile), for compose and Kubernetes alike.
JS_FILE = Path(__file__).resolve().parent.parent / "nginx" / "reactions.js"
JS_NAME = JS_FILE.name
JS_IN_IMAGE = f"/usr/share/reactions/nginx/{JS_NAME}"
# The GET cache's own server listens on this socket in a local runtime directory.
# A crashed nginx leaves it behind and nginx will not bind over it: whoever
# starts nginx removes it first (``remove_stale_socket``).
CACHE_SOCKET = "hours.sock"
# In a container (its own network namespace, a writable layer that outlives a
# crash) it listens on loopback instead, never published.
CONTAINER_CACHE_LISTEN = "127.0.0.1:8081"


@dataclass(frozen=True)
class NginxLayout:
    """Where this nginx listens and keeps its files, and where the dashboard's files are."""

    listen: str
    runtime_dir: str
    access_log: str
    error_log: str
    static_root: str = str(DASHBOARD_DIR)
    worker_processes: str = "auto"
    # Buffered access logs cost less per request; flushed every second.
    access_log_buffer: str = " buffer=64k flush=1s"
    # Where the applied shard file is served to aggregators on other hosts
    # (internal address:port, never the public one), and the file; "" serves nothing.
    topology_listen: str = ""
    topology_file: str = ""
    # The cache keys' njs code as this nginx sees it.
    js_file: str = str(JS_FILE)
    # The GET cache's own server: "unix:<path>" or a loopback address:port ("": the runtime dir's socket).
    cache_listen: str = ""
    # False: GETs go straight to the aggregators, no cache (make bench's baseline).
    get_cache: bool = True
    # A directory: the upstreams name the writers' Unix sockets there, not their
    # addresses (sharding/sockets.py; the local cluster's WRITER_SOCKETS=1).
    writer_sockets: str = ""

    @classmethod
    def local(cls, host: str, port: int, runtime_dir: Path, static_root: Path = DASHBOARD_DIR,
              topology_listen: str = "", topology_file: str = "") -> NginxLayout:
        return cls(listen=f"{host}:{port}", runtime_dir=str(runtime_dir), access_log=str(runtime_dir / "access.log"),
                   error_log=str(runtime_dir / "error.log"), static_root=str(static_root),
                   topology_listen=topology_listen, topology_file=topology_file)

    @classmethod
    def container(cls, port: int = 8000) -> NginxLayout:
        """Inside the nginx image: logs to the container's output; the njs code and dashboard from the image."""
        return cls(listen=str(port), runtime_dir="/var/cache/nginx", access_log="/dev/stdout",
                   error_log="stderr", access_log_buffer="", static_root=DASHBOARD_IN_CONTAINER,
                   js_file=JS_IN_IMAGE, cache_listen=CONTAINER_CACHE_LISTEN)

    def template_values(self) -> dict[str, str]:
        """The template's placeholders this layout fills.

        Every field is a placeholder of its own name, but for those in
        DECIDING_FIELDS, which decide the placeholders computed here.
        """
        values = {name: value for name, value in asdict(self).items() if name not in DECIDING_FIELDS}
        return values | {
            "fresh_cache": "reactions_fresh" if self.get_cache else "off",
            "cached_reads_upstream": "reactions_hours" if self.get_cache else "reactions_aggregators",
            "cache_listen": self.cache_listen or f"unix:{self.runtime_dir}/{CACHE_SOCKET}",
            "topology_server": topology_server(self),
        }


# NginxLayout's fields that are no placeholder as they are: the template sees
# what they decide (NginxLayout.template_values).
DECIDING_FIELDS = frozenset({"topology_listen", "topology_file", "cache_listen", "get_cache", "writer_sockets"})


def upstream_servers(addresses: list[str] | tuple[str, ...]) -> str:
    # max_fails/fail_timeout: a writer that refused a connection is skipped
    # (its users go to the next one on the ring) for a few seconds.
    return "\n".join(f"        server {a} max_fails=1 fail_timeout=5s;" for a in addresses)


TOPOLOGY_SERVER = """
    # The applied shard file, for aggregators on other hosts (REACTIONS_SHARDS_URL).
    # It lists internal addresses and DSNs: served on this internal address only,
    # never on the public port above.
    server {
        listen %(listen)s;
        access_log off;
        location = /shards.json {
            default_type application/json;
            add_header Cache-Control no-cache always;
            alias %(file)s;
        }
        location / {
            return 404 "not found\\n";
        }
    }
"""


def topology_server(layout: NginxLayout) -> str:
    if not layout.topology_listen:
        return ""
    if not layout.topology_file or not layout.topology_file.startswith("/"):
        raise ConfigError("the topology server needs the shard file's absolute path")
    if layout.topology_listen == layout.listen:
        raise ConfigError("the shard file must not be served on the public entry port")
    return TOPOLOGY_SERVER % {"listen": layout.topology_listen, "file": layout.topology_file}


def writer_addresses(topology: Topology) -> list[str]:
    """The writers nginx routes to, in shard-file order: active shards only."""
    return [w for shard in topology.active_shards for w in shard.writers]


def render(topology: Topology, layout: NginxLayout, shards_file: str = "shard file") -> str:
    """The nginx configuration for this topology (pure: no I/O but the template)."""
    writers = writer_addresses(topology)
    if not writers:
        raise ConfigError("no active shard has a writer: nginx would have nowhere to send writes")
    if not topology.aggregators:
        raise ConfigError("no aggregators: nginx would have nowhere to send reads")
    values = {
        "shards_file": shards_file,
        "writer_servers": upstream_servers([writer_server(w, layout.writer_sockets) for w in writers]),
        "aggregator_servers": upstream_servers(topology.aggregators),
        "js_module": JS_MODULE,
        **layout.template_values(),
    }
    values["generation"] = generation(values)
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], TEMPLATE.read_text())


def remove_stale_socket(runtime_dir: Path) -> None:
    """Before starting nginx (never while it runs): a crashed one's cache socket would stop it binding."""
    (runtime_dir / CACHE_SOCKET).unlink(missing_ok=True)


def generation(values: dict[str, str]) -> str:
    """A short digest of what the configuration routes to, served by nginx's /healthz."""
    return hashlib.sha256(repr(sorted(values.items())).encode()).hexdigest()[:12]


def generation_of(config_text: str) -> str:
    match = re.search(r"Generation: (\w+)", config_text)
    if match is None:
        raise ValueError("not a rendered Reactions nginx configuration")
    return match.group(1)


def nginx_command(config: Path, prefix: Path, *args: str) -> list[str]:
    return [NGINX_BIN, "-p", f"{prefix}/", "-c", str(config), *args]


def check(config: Path, prefix: Path) -> None:
    """``nginx -t``; raise ConfigError with nginx's own words if it fails."""
    result = subprocess.run(nginx_command(config, prefix, "-t", "-q"), capture_output=True, text=True)
    if result.returncode != 0:
        raise ConfigError(f"nginx -t failed for {config}: {result.stderr.strip()}")


def reload(config: Path, prefix: Path) -> None:
    """Test the configuration, then ``nginx -s reload`` (signals the pid in our own pid file)."""
    check(config, prefix)
    subprocess.run(nginx_command(config, prefix, "-s", "reload"), check=True, capture_output=True)
