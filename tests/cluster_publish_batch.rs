//! The cluster's publish script against a real Redis, batch by batch (the Kafka ingest publishes runs of records
//! with one call): events keep their order in the room stream and on the channel (each message naming the room's
//! previous sequence), a claim taken before — in an earlier batch or earlier in the same one — skips its event,
//! and events without a claim always go.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{unique_prefix, RedisServer};
use futures_util::StreamExt;
use tidings::cluster::broker::{Broker, ChannelMessage};
use tidings::cluster::connection::RedisTarget;
use tidings::cluster::keys::Keys;
use tidings::cluster::Redis;
use tidings::hub::{Event, RoomKey};

fn event<'a>(rooms: &'a [String], data: &'a str) -> Event<'a> {
    Event {
        nsp: "/",
        rooms,
        name: "update",
        data: data.as_bytes(),
        attachments: &[],
        with_offset: true,
    }
}

#[tokio::test]
async fn batches_keep_order_and_claims_skip_repeats() {
    let server = RedisServer::start().await;
    let keys = Keys::new(&unique_prefix("batch"));
    let redis = Arc::new(Redis::new(RedisTarget::parse(&server.url()).unwrap()));
    let broker = Broker::new(redis, keys.clone(), 1000, Duration::from_secs(600));
    let news = vec!["news".to_owned()];
    let both = vec!["news".to_owned(), "sport".to_owned()];
    let room = RoomKey::new("/", "news");

    let client = redis::Client::open(server.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(keys.channel(&room)).await.unwrap();

    let (c1, c2, c3) = (
        keys.ingest_seen("r-1"),
        keys.ingest_seen("r-2"),
        keys.ingest_seen("r-3"),
    );
    let (e1, e2, e3, e4) = (
        event(&news, "1"),
        event(&both, "2"),
        event(&news, "3"),
        event(&news, "4"),
    );
    let first = broker
        .publish_batch(
            &[
                (&e1, Some(c1.as_str())),
                (&e2, None),
                (&e3, Some(c1.as_str())), // the same claim again, in the same batch
                (&e4, Some(c2.as_str())),
            ],
            60_000,
        )
        .await
        .unwrap();
    let seqs: Vec<Option<u64>> = first.iter().map(|p| p.map(|p| p.seq)).collect();
    assert!(seqs[0].is_some() && seqs[1].is_some() && seqs[3].is_some());
    assert_eq!(
        seqs[2], None,
        "a claim taken earlier in the batch skips the event"
    );
    assert!(seqs[0] < seqs[1] && seqs[1] < seqs[3], "{seqs:?}");
    // A later batch: r-2 was taken, r-3 is new.
    let e5 = event(&news, "5");
    let again = broker
        .publish_batch(
            &[(&e4, Some(c2.as_str())), (&e5, Some(c3.as_str()))],
            60_000,
        )
        .await
        .unwrap();
    assert!(again[0].is_none());
    let last = again[1].expect("a fresh claim publishes").seq;
    assert!(last > seqs[3].unwrap());
    assert_eq!(
        broker
            .publish_once(&e5, &c3, 60_000)
            .await
            .unwrap()
            .map(|p| p.seq),
        None
    );

    // The room's channel: 1, 2, 4, 5 in order, each naming the previous one.
    let mut stream = pubsub.on_message();
    let mut got = Vec::new();
    for _ in 0..4 {
        let message = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("channel message")
            .unwrap();
        let text: String = message.get_payload().unwrap();
        let parsed = ChannelMessage::parse(&text).unwrap();
        let data: serde_json::Value = serde_json::from_str(parsed.payload).unwrap();
        got.push((parsed.seq, parsed.prev, data["d"].as_u64().unwrap()));
    }
    let expected_seqs = [seqs[0].unwrap(), seqs[1].unwrap(), seqs[3].unwrap(), last];
    assert_eq!(
        got.iter().map(|g| g.2).collect::<Vec<_>>(),
        vec![1, 2, 4, 5]
    );
    for (i, (seq, prev, _)) in got.iter().enumerate() {
        assert_eq!(*seq, expected_seqs[i]);
        assert_eq!(*prev, if i == 0 { 0 } else { expected_seqs[i - 1] });
    }
    // The stream holds the same, and the other room only the event addressed to both.
    let mut conn = server.conn().await;
    let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(keys.stream(&room))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let stream_seqs: Vec<u64> = ids
        .iter()
        .map(|(id, _)| id.trim_start_matches("0-").parse().unwrap())
        .collect();
    assert_eq!(stream_seqs, expected_seqs.to_vec());
    let sport: usize = redis::cmd("XLEN")
        .arg(keys.stream(&RoomKey::new("/", "sport")))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(sport, 1);
}
