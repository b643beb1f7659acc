"""The Redis the tests share, and the throwaway servers some start (now in ``testsupport``,
which the benchmark uses too; the names stay importable from here)."""

from testsupport.redis_servers import RedisClusterServers, RedisServer
from testsupport.system import free_port

REDIS_URL = "redis://127.0.0.1:6379"

__all__ = ["REDIS_URL", "RedisClusterServers", "RedisServer", "free_port"]
