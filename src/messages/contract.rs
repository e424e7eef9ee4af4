//! The behaviour every [`MessageStore`] must have, as one check each implementation's tests run against a
//! fresh, empty store built with [`CONTRACT_LIMITS`].

use std::sync::Arc;

use super::model::{InboxLimits, Marks, MessageId, NewMessage, Status};
use super::{MessageStore, StoreError};

/// The bounds the contract expects the store under test to have.
pub const CONTRACT_LIMITS: InboxLimits = InboxLimits {
    max_messages: 5,
    retention_ms: 10_000,
    max_records: 1_000_000,
};

/// Start of the contract's clock (ms since the Unix epoch).
const T0: u64 = 1_800_000_000_000;

fn new(from: &str, to: &str, n: u32, key: Option<&str>) -> NewMessage {
    NewMessage {
        from: (!from.is_empty()).then(|| from.to_owned()),
        to: to.to_owned(),
        event: "chat".into(),
        data: Arc::from(format!("{{\"n\":{n}}}").as_str()),
        key: key.map(str::to_owned),
        at_ms: T0 + u64::from(n),
        ttl_ms: 60_000,
    }
}

fn ids(pending: &super::Pending) -> Vec<u64> {
    pending.messages.iter().map(|m| m.seq).collect()
}

/// Runs every check; panics with the first one that fails. `prefix` keeps the users of this run apart from
/// other runs on a shared store.
pub async fn check(store: &dyn MessageStore, prefix: &str) {
    let alice = format!("{prefix}alice");
    let bob = format!("{prefix}bob");
    let carol = format!("{prefix}carol");

    // Accept: sequences per recipient, idempotency per sender and key.
    let m1 = store
        .accept(new(&alice, &bob, 1, Some("k1")))
        .await
        .unwrap();
    assert!(m1.fresh);
    assert_eq!((m1.message.seq, m1.status), (1, Status::Accepted));
    assert_eq!(m1.message.expires_at, T0 + 1 + 60_000);
    let again = store
        .accept(new(&alice, &bob, 99, Some("k1")))
        .await
        .unwrap();
    assert!(!again.fresh, "a repeated key stores nothing");
    assert_eq!(again.message, m1.message);
    let other_sender = store
        .accept(new(&carol, &bob, 2, Some("k1")))
        .await
        .unwrap();
    assert!(other_sender.fresh, "keys are per sender");
    assert_eq!(other_sender.message.seq, 2);
    let m3 = store.accept(new(&alice, &bob, 3, None)).await.unwrap();
    assert_eq!(m3.message.seq, 3);
    let to_carol = store.accept(new(&alice, &carol, 4, None)).await.unwrap();
    assert_eq!(to_carol.message.seq, 1, "each inbox has its own sequence");

    // A batch: accepted in the given order, each as `accept` would (a repeated key inside the batch answers
    // the first; a full inbox refuses one message and not the others).
    let frank = format!("{prefix}frank");
    let gina = format!("{prefix}gina");
    let mut batch: Vec<NewMessage> = (0..5).map(|n| new(&alice, &gina, 100 + n, None)).collect();
    batch.push(new(&alice, &frank, 110, Some("b1")));
    batch.push(new(&alice, &gina, 111, None));
    batch.push(new(&alice, &frank, 112, Some("b1")));
    batch.push(new(&alice, &frank, 113, None));
    let answers = store.accept_batch(batch).await;
    assert_eq!(answers.len(), 9);
    let seqs: Vec<_> = answers[..5]
        .iter()
        .map(|a| a.as_ref().unwrap().message.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    let first = answers[5].as_ref().unwrap();
    assert!(first.fresh && first.message.seq == 1);
    assert_eq!(
        answers[6].as_ref().unwrap_err(),
        &StoreError::InboxFull,
        "gina's inbox holds 5"
    );
    let repeated = answers[7].as_ref().unwrap();
    assert!(!repeated.fresh && repeated.message.id == first.message.id);
    assert_eq!(answers[8].as_ref().unwrap().message.seq, 2);
    let data: Vec<_> = store
        .pending(&gina, "g", 0, 10)
        .await
        .unwrap()
        .messages
        .iter()
        .map(|m| m.data.to_string())
        .collect();
    assert_eq!(
        data,
        (100..105)
            .map(|n| format!("{{\"n\":{n}}}"))
            .collect::<Vec<_>>()
    );
    assert!(store.accept_batch(Vec::new()).await.is_empty());

    // Marks of several devices in one batch: each as mark_sent / mark_delivered would do it.
    let f1 = answers[5].as_ref().unwrap().message.id.clone();
    let f2 = answers[8].as_ref().unwrap().message.id.clone();
    let mark = |user: &str, device: Option<&str>, id: &MessageId, at: u64| Marks {
        user: user.to_owned(),
        device: device.map(str::to_owned),
        ids: vec![id.clone()],
        at_ms: T0 + at,
    };
    let (changes, failure) = store
        .mark_batch(vec![
            mark(&frank, None, &f1, 5),
            mark(&frank, Some("p"), &f2, 6),
            mark(&frank, Some("q"), &f2, 7),
            mark(&gina, Some("p"), &f2, 8),
        ])
        .await;
    assert_eq!(failure, None);
    let seen: Vec<_> = changes
        .iter()
        .map(|c| (c.id.clone(), c.status, c.device.clone()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (f1.clone(), Status::Sent, None),
            (f2.clone(), Status::Delivered, Some("p".to_owned())),
            (f2.clone(), Status::Delivered, Some("q".to_owned())),
        ]
    );
    let state = store.get(&f2).await.unwrap().unwrap();
    assert_eq!(
        (
            state.status,
            state.sent_at,
            state.delivered_at,
            state.devices.len()
        ),
        (Status::Delivered, Some(T0 + 6), Some(T0 + 6), 2)
    );

    // Pending per device, in order.
    let page = store.pending(&bob, "phone", 0, 10).await.unwrap();
    assert_eq!((ids(&page), page.last_seq), (vec![1, 2, 3], 3));
    assert_eq!(page.messages[0].data.as_ref(), "{\"n\":1}");
    assert_eq!(page.messages[0].from.as_deref(), Some(alice.as_str()));
    let page = store.pending(&bob, "phone", 1, 1).await.unwrap();
    assert_eq!(ids(&page), vec![2]);

    // Sent: once, only for the recipient.
    let id1 = m1.message.id.clone();
    assert!(store
        .mark_sent(&carol, std::slice::from_ref(&id1), T0 + 10)
        .await
        .unwrap()
        .is_empty());
    let sent = store
        .mark_sent(&bob, std::slice::from_ref(&id1), T0 + 10)
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].status, sent[0].from.as_deref()),
        (Status::Sent, Some(alice.as_str()))
    );
    assert!(store
        .mark_sent(&bob, std::slice::from_ref(&id1), T0 + 11)
        .await
        .unwrap()
        .is_empty());

    // Delivered: a receipt per device, the first counts; other users' acks do nothing.
    let unknown = MessageId::parse("nope").unwrap();
    let acked = store
        .mark_delivered(&bob, "phone", &[id1.clone(), unknown.clone()], T0 + 20)
        .await
        .unwrap();
    assert_eq!(acked.len(), 1);
    assert_eq!(
        (acked[0].status, acked[0].device.as_deref()),
        (Status::Delivered, Some("phone"))
    );
    assert!(store
        .mark_delivered(&bob, "phone", std::slice::from_ref(&id1), T0 + 21)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .mark_delivered(&carol, "x", std::slice::from_ref(&id1), T0 + 21)
        .await
        .unwrap()
        .is_empty());
    let laptop = store
        .mark_delivered(&bob, "laptop", std::slice::from_ref(&id1), T0 + 22)
        .await
        .unwrap();
    assert_eq!(laptop.len(), 1);
    let state = store.get(&id1).await.unwrap().expect("kept");
    assert_eq!(state.status, Status::Delivered);
    assert_eq!(
        (state.sent_at, state.delivered_at),
        (Some(T0 + 10), Some(T0 + 20))
    );
    let devices: Vec<_> = state.devices.iter().map(|d| d.device.as_str()).collect();
    assert_eq!(devices, ["phone", "laptop"]);
    let page = store.pending(&bob, "phone", 0, 10).await.unwrap();
    assert_eq!(
        ids(&page),
        vec![2, 3],
        "acknowledged messages are not pending"
    );
    let page = store.pending(&bob, "tablet", 0, 10).await.unwrap();
    assert_eq!(ids(&page), vec![1, 2, 3], "another device still gets them");

    // Read: cumulative, per sender, only the recipient's messages; read messages leave the inbox.
    let id3 = m3.message.id.clone();
    assert_eq!(
        store.mark_read(&carol, &alice, &id3, T0 + 30).await,
        Err(StoreError::UnknownMessage)
    );
    let read = store.mark_read(&bob, &alice, &id3, T0 + 30).await.unwrap();
    let read_ids: Vec<_> = read.iter().map(|c| c.id.clone()).collect();
    assert_eq!(read_ids, vec![id1.clone(), id3.clone()]);
    assert!(read.iter().all(|c| c.status == Status::Read));
    assert!(store
        .mark_read(&bob, &alice, &id3, T0 + 31)
        .await
        .unwrap()
        .is_empty());
    let state = store.get(&id3).await.unwrap().expect("kept");
    assert_eq!((state.status, state.read_at), (Status::Read, Some(T0 + 30)));
    let page = store.pending(&bob, "tablet", 0, 10).await.unwrap();
    assert_eq!(ids(&page), vec![2], "read messages left the inbox");
    let listed: Vec<_> = store
        .inbox(&bob, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| (s.message.seq, s.status))
        .collect();
    assert_eq!(listed, vec![(2, Status::Accepted)]);
    // A late receipt after read is kept, without moving the status back.
    assert!(store
        .mark_delivered(&bob, "tablet", std::slice::from_ref(&id3), T0 + 32)
        .await
        .unwrap()
        .is_empty());
    let state = store.get(&id3).await.unwrap().unwrap();
    assert_eq!((state.status, state.devices.len()), (Status::Read, 1));

    // Bounded inbox: 5 messages; the oldest delivered one makes room, undelivered ones are never pushed out.
    let dave = format!("{prefix}dave");
    let mut dave_ids = Vec::new();
    for n in 0..5 {
        let accepted = store
            .accept(new(&alice, &dave, 10 + n, None))
            .await
            .unwrap();
        dave_ids.push(accepted.message.id);
    }
    assert_eq!(
        store.accept(new(&alice, &dave, 20, None)).await,
        Err(StoreError::InboxFull)
    );
    store
        .mark_delivered(&dave, "d", &dave_ids[1..2], T0 + 40)
        .await
        .unwrap();
    let sixth = store.accept(new(&alice, &dave, 21, None)).await.unwrap();
    assert_eq!(sixth.message.seq, 6);
    let listed: Vec<_> = store
        .inbox(&dave, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|s| s.message.seq)
        .collect();
    assert_eq!(listed, vec![1, 3, 4, 5, 6]);
    assert_eq!(
        store.get(&dave_ids[1]).await.unwrap().map(|s| s.status),
        Some(Status::Delivered),
        "a message pushed out of the inbox keeps its record"
    );

    // Expiry: undelivered → expired (a change); delivered → out of the inbox silently; records forgotten
    // after the retention.
    let erin = format!("{prefix}erin");
    let undelivered = store.accept(new(&alice, &erin, 50, None)).await.unwrap();
    let delivered = store.accept(new(&alice, &erin, 51, None)).await.unwrap();
    store
        .mark_delivered(
            &erin,
            "e",
            std::slice::from_ref(&delivered.message.id),
            T0 + 60,
        )
        .await
        .unwrap();
    let changes = store.sweep(T0 + 50 + 60_000).await.unwrap();
    let expired: Vec<_> = changes
        .iter()
        .filter(|c| c.to == erin)
        .map(|c| (c.id.clone(), c.status))
        .collect();
    assert_eq!(
        expired,
        vec![(undelivered.message.id.clone(), Status::Expired)]
    );
    let state = store.get(&undelivered.message.id).await.unwrap().unwrap();
    assert_eq!(
        (state.status, state.expired_at),
        (Status::Expired, Some(T0 + 50 + 60_000))
    );
    store.sweep(T0 + 51 + 60_000).await.unwrap();
    assert!(store.inbox(&erin, 0, 10).await.unwrap().is_empty());
    assert!(
        store
            .mark_delivered(
                &erin,
                "f",
                std::slice::from_ref(&undelivered.message.id),
                T0 + 70_000
            )
            .await
            .unwrap()
            .is_empty(),
        "an expired message takes no receipt"
    );
    store.sweep(T0 + 51 + 60_000 + 10_000).await.unwrap();
    assert_eq!(store.get(&undelivered.message.id).await.unwrap(), None);
    assert_eq!(store.get(&delivered.message.id).await.unwrap(), None);
    // Once forgotten, the idempotency key may be used again.
    let k = store
        .accept(new(&erin, &alice, 80, Some("old")))
        .await
        .unwrap();
    store
        .mark_read(&alice, &erin, &k.message.id, T0 + 70_100)
        .await
        .unwrap();
    store.sweep(T0 + 80_100).await.unwrap();
    let reused = store
        .accept(new(&erin, &alice, 81, Some("old")))
        .await
        .unwrap();
    assert!(reused.fresh);
}
