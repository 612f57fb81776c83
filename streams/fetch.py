"""Make the consumer's fetch wait configurable (Faust hard-codes 1500 ms).

On Apache Kafka a fetch returns as soon as any record is available, so the
wait only bounds idle polls. Some Kafka-protocol brokers (Tansu, measured
here) hold every fetch for the full wait: with 1500 ms the median
event-to-consumer latency was 400 ms, with 20 ms it was 7.6 ms. A short wait
costs an idle fetch per interval on Kafka and removes that delay elsewhere.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as driver


def use_fetch_max_wait(ms: int) -> None:
    """Install a consumer whose fetches wait at most ``ms`` (process-wide: one app per worker)."""

    class Thread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = ms  # read by AIOKafkaConsumer.start()
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> Thread:
            return Thread(self, loop=self.loop, beacon=self.beacon)

    driver.Transport.Consumer = Consumer
