#!/usr/bin/env python3
"""The Kafka egress tests' independent consumer (confluent-kafka): reads a topic from its start until it has
--count records or --timeout seconds passed without a new one, and prints one JSON line per record:
{"partition", "offset", "key", "value" (parsed JSON), "headers": {name: text}}.

  kafka_consume.py --brokers B --topic T --count N [--timeout S]
"""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaError


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=15.0)
    args = parser.parse_args()

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": f"egress-check-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 50,
    })
    consumer.subscribe([args.topic])
    got = 0
    last = time.monotonic()
    try:
        while got < args.count and time.monotonic() - last < args.timeout:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() != KafkaError._PARTITION_EOF:
                    print(f"consume error: {message.error()}", file=sys.stderr)
                continue
            last = time.monotonic()
            got += 1
            headers = {k: (v or b"").decode() for k, v in (message.headers() or [])}
            print(json.dumps({
                "partition": message.partition(),
                "offset": message.offset(),
                "key": message.key().decode() if message.key() is not None else None,
                "value": json.loads(message.value()),
                "headers": headers,
            }), flush=True)
    finally:
        consumer.close()


if __name__ == "__main__":
    main()
