"""gunicorn settings for the web process (also used by the benchmarks, for a fair baseline)."""
import multiprocessing
import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
# CPUs + 1: the webhook is CPU-bound Python; more processes than that only add switching
# (bench/webhook_ingest.py measured 3 workers x 4 threads best on 2 CPUs).
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30            # a request taking longer is a bug: the worker is replaced
graceful_timeout = 30   # on SIGTERM, in-flight requests get this long to finish
keepalive = 5
max_requests = 100000   # recycle workers now and then, jittered so they do not restart together
max_requests_jitter = 10000
accesslog = os.environ.get("ACCESS_LOG", "-") or None
access_log_format = '{"ts":"%(t)s","method":"%(m)s","path":"%(U)s","status":%(s)s,"ms":%(M)s,"id":"%({x-request-id}i)s"}'
errorlog = "-"
control_socket_disable = True  # one shared path per user: two instances (tests, benchmarks) would clash
