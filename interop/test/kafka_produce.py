#!/usr/bin/env python3
"""The Kafka tests' independent producer (confluent-kafka): creates a topic, or produces numbered records.

  kafka_produce.py --brokers B --topic T --create PARTITIONS
  kafka_produce.py --brokers B --topic T --room R --event E --first N --count C [--id-prefix P] [--key-room]
  kafka_produce.py --brokers B --topic T --raw TEXT           (one record whose value is TEXT as it is)

  --partitions P   record n goes to partition n % P and its data is {"n": n, "p": n % P}
  --rate R         at most R records a second (a steady stream), instead of as fast as the broker acks
  --progress       print "acked N" after each acknowledged record (the total is still the last line)

Every record is its own batch (flushed one by one): the test broker cannot resume a fetch from inside a batch.
Record n's value is {"room": R, "event": E, "data": {"n": n}, "id": "<P>-<n>"} (with --key-room the room is the
record key instead). Prints how many records were acknowledged.
"""

import argparse
import json
import sys
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--create", type=int)
    parser.add_argument("--room", default="news")
    parser.add_argument("--event", default="update")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--id-prefix", default="rec")
    parser.add_argument("--key-room", action="store_true")
    parser.add_argument("--raw")
    parser.add_argument("--partitions", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()

    if args.create:
        admin = AdminClient({"bootstrap.servers": args.brokers})
        futures = admin.create_topics([NewTopic(args.topic, num_partitions=args.create, replication_factor=1)])
        for future in futures.values():
            future.result(timeout=30)
        print("created")
        return

    producer = Producer({"bootstrap.servers": args.brokers, "client.id": "kafka-produce", "linger.ms": 0, "acks": "all"})
    acked = 0
    failed = []

    def report(err, _msg):
        nonlocal acked
        if err is None:
            acked += 1
            if args.progress:
                print(f"acked {acked}", flush=True)
        else:
            failed.append(str(err))

    def send(value, key=None, partition=None):
        extra = {} if partition is None else {"partition": partition}
        producer.produce(args.topic, value=value, key=key, on_delivery=report, **extra)
        producer.flush(30)

    if args.raw is not None:
        send(args.raw.encode())
    started = time.monotonic()
    for i, n in enumerate(range(args.first, args.first + args.count)):
        if args.rate:
            time.sleep(max(0.0, started + i / args.rate - time.monotonic()))
        record = {"event": args.event, "data": {"n": n}, "id": f"{args.id_prefix}-{n}"}
        partition = None
        if args.partitions:
            partition = n % args.partitions
            record["data"]["p"] = partition
        if args.key_room:
            send(json.dumps(record).encode(), key=args.room.encode(), partition=partition)
        else:
            record["room"] = args.room
            send(json.dumps(record).encode(), partition=partition)
    print(acked)
    if failed:
        print(f"failed: {failed[:3]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
