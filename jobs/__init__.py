"""RQ jobs: node runs, retries and periodic work.

Jobs are named by their dotted path when queued (bot/tasks.py), so nothing outside jobs/
imports this package but the worker. Each runs as `jobs.job.AppJob`, inside the app.
"""
