"""One serving process's operations side: the admin listener (/metrics, /status, /healthz,
POST /reload), the workers' snapshot sockets, and hot reload. See runtime.py."""
