"""Dialogue tasks on RabbitMQ: chat turns and ingestion jobs answered by ``ragtide worker``.

- ``tasks``: what clients submit, the queue message, the record ``GET …/tasks/{id}`` shows.
- ``broker``: queue topology, publishing with confirms (API side), AMQP error mapping.
- ``client``: submitting and reading tasks, as the API routes do it.
- ``execute``: one delivery, run so that its effect happens once (the argument is there).
- ``consumer``: the consume loop with prefetch, acks, retries, dead-lettering and drain.
- ``callback``, ``http``: best-effort result callbacks; the worker's probe endpoint.
- ``main``: ``run_worker(settings)``, what ``ragtide worker`` runs.

The core never imports this package; aio-pika is imported only when tasks are enabled.
"""
