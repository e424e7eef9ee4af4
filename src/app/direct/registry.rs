//! The devices connected to this node, by user. Every connection in the direct namespace is a device, so the
//! table is as large as the node: a user takes one 16-byte slot, found by the user id its devices' verified
//! claims already hold (no key of its own), with its first device inline.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::hash_table::{Entry, HashTable};

use super::device::Device;
use crate::engineio::session::Sid;

/// One user's devices here, the first inline.
enum Devices {
    One(Arc<Device>),
    /// Two or more.
    #[allow(clippy::box_collection)] // Boxed so that `One` sets the size: 16 bytes, not 32.
    Many(Box<Vec<Arc<Device>>>),
}

impl Devices {
    fn as_slice(&self) -> &[Arc<Device>] {
        match self {
            Devices::One(device) => std::slice::from_ref(device),
            Devices::Many(devices) => devices,
        }
    }

    fn user(&self) -> &str {
        self.as_slice()[0].user()
    }
}

/// This node's devices by user.
pub(super) struct Registry {
    table: HashTable<Devices>,
    hasher: RandomState,
}

impl Registry {
    /// No devices.
    pub fn new() -> Registry {
        Registry {
            table: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// Registers `device`; how many devices its user has here now.
    pub fn add(&mut self, device: Arc<Device>) -> usize {
        let Registry { table, hasher } = self;
        let hash = hasher.hash_one(device.user());
        let entry = table.entry(
            hash,
            |devices| devices.user() == device.user(),
            |devices| hasher.hash_one(devices.user()),
        );
        match entry {
            Entry::Occupied(mut occupied) => {
                let devices = occupied.get_mut();
                match devices {
                    Devices::One(first) => {
                        *devices = Devices::Many(Box::new(vec![first.clone(), device]));
                        2
                    }
                    Devices::Many(list) => {
                        list.push(device);
                        list.len()
                    }
                }
            }
            Entry::Vacant(vacant) => {
                vacant.insert(Devices::One(device));
                1
            }
        }
    }

    /// Takes out the device of `user` on the socket `socket`: the device, and how many `user` has left here.
    pub fn remove(&mut self, user: &str, socket: &Sid) -> Option<(Arc<Device>, usize)> {
        let Registry { table, hasher } = self;
        let hash = hasher.hash_one(user);
        let Ok(mut occupied) = table.find_entry(hash, |devices| devices.user() == user) else {
            return None;
        };
        let devices = occupied.get_mut();
        match devices {
            Devices::One(device) if device.socket.id() == *socket => {
                let (Devices::One(device), _) = occupied.remove() else {
                    unreachable!("matched as one device above");
                };
                Some((device, 0))
            }
            Devices::One(_) => None,
            Devices::Many(list) => {
                let index = list.iter().position(|d| d.socket.id() == *socket)?;
                let device = list.swap_remove(index);
                let left = list.len();
                if left == 1 {
                    *devices = Devices::One(list.pop().expect("one left"));
                }
                Some((device, left))
            }
        }
    }

    /// The devices of `user` here (none: empty).
    pub fn of(&self, user: &str) -> &[Arc<Device>] {
        let hash = self.hasher.hash_one(user);
        self.table
            .find(hash, |devices| devices.user() == user)
            .map_or(&[], Devices::as_slice)
    }

    /// Every user with devices here, with them.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Arc<Device>])> {
        self.table
            .iter()
            .map(|devices| (devices.user(), devices.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(sub: &str) -> Arc<Device> {
        let socket = super::super::tests::socket(sub);
        let claims = socket.user().expect("a socket with claims");
        Device::new(socket, claims, None)
    }

    #[test]
    fn a_slot_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Devices>(), 16);
    }

    #[test]
    fn devices_are_found_by_their_user_and_removed_by_their_socket() {
        let mut registry = Registry::new();
        let (a1, a2, a3, b) = (device("a"), device("a"), device("a"), device("b"));
        assert_eq!(registry.add(a1.clone()), 1);
        assert_eq!(registry.add(b.clone()), 1);
        assert_eq!(registry.add(a2.clone()), 2);
        assert_eq!(registry.add(a3.clone()), 3);
        // Enough other users for the table to grow and rehash by the claims' user ids.
        let others: Vec<_> = (0..200).map(|i| device(&format!("u{i}"))).collect();
        for other in &others {
            assert_eq!(registry.add(other.clone()), 1);
        }
        assert_eq!(registry.of("a").len(), 3);
        assert_eq!(registry.of("u17")[0].socket.id(), others[17].socket.id());
        assert!(registry.of("nobody").is_empty());
        assert_eq!(registry.iter().count(), 202);

        // A socket of another user is not taken from this one.
        assert!(registry.remove("a", &b.socket.id()).is_none());
        let (gone, left) = registry.remove("a", &a2.socket.id()).unwrap();
        assert_eq!((gone.socket.id(), left), (a2.socket.id(), 2));
        assert!(registry.remove("a", &a2.socket.id()).is_none());
        assert_eq!(registry.remove("a", &a1.socket.id()).unwrap().1, 1);
        assert_eq!(registry.of("a")[0].socket.id(), a3.socket.id());
        assert_eq!(registry.remove("a", &a3.socket.id()).unwrap().1, 0);
        assert!(registry.of("a").is_empty());
        assert_eq!(registry.of("b").len(), 1);
        assert_eq!(registry.iter().count(), 201);
    }
}
