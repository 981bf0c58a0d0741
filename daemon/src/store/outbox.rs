//! The audit outbox: decisions kept durably until the server acknowledges them.

use facegate_protocol::AuditEvent;
use sled::transaction::Transactional;

use super::codec;
use super::{Store, StoreError};

impl Store {
    /// The outbox's epoch: read from `meta`, or chosen at random in
    /// `1..=i64::MAX` (never 0, which means "before epochs"; 63 bits so that
    /// it reads the same as a database's signed integer) and stored when
    /// the database has none.
    /// A re-created database gets a new one, so the server never takes its
    /// events for those of the database before it.
    pub(crate) fn read_or_create_outbox_epoch(&self) -> Result<u64, StoreError> {
        if let Some(bytes) = self.meta.get(codec::META_OUTBOX_EPOCH).map_err(StoreError::read)? {
            return codec::read_u64(&bytes, "the outbox epoch");
        }
        let rng = ring::rand::SystemRandom::new();
        let epoch = loop {
            let bytes: [u8; 8] = ring::rand::generate(&rng).map_err(|_| StoreError::Random)?.expose();
            let epoch = u64::from_be_bytes(bytes) >> 1;
            if epoch != 0 {
                break epoch;
            }
        };
        self.meta.insert(codec::META_OUTBOX_EPOCH, codec::u64_bytes(epoch)).map_err(StoreError::write)?;
        self.flush()?;
        Ok(epoch)
    }

    /// The epoch stamped on every audit event of this database.
    pub fn outbox_epoch(&self) -> u64 {
        self.outbox_epoch
    }

    pub(crate) fn read_last_audit_seq(&self) -> Result<u64, StoreError> {
        let counter = match self.meta.get(codec::META_AUDIT_SEQ).map_err(StoreError::read)? {
            Some(bytes) => codec::read_u64(&bytes, "the audit sequence number")?,
            None => 0,
        };
        let last_key = match self.outbox.last().map_err(StoreError::read)? {
            Some((key, _)) => codec::read_u64(&key, "an outbox key")?,
            None => 0,
        };
        Ok(counter.max(last_key))
    }

    /// Stores `event` under the next audit seq (replacing `event.seq`) and
    /// flushes before returning the seq: only then may the decision be
    /// actuated. A failed write (full disk) is an error, never a silent drop;
    /// its seq is not handed out again.
    pub fn append_audit(&self, mut event: AuditEvent) -> Result<u64, StoreError> {
        let mut last = self.audit_lock();
        let seq = *last + 1;
        // Even if the write fails half-way, this seq may have reached the disk.
        *last = seq;
        event.seq = seq;
        event.epoch = self.outbox_epoch;
        let bytes = codec::to_cbor(&event);
        (&self.meta, &self.outbox)
            .transaction(|(meta, outbox)| {
                meta.insert(codec::META_AUDIT_SEQ, codec::u64_bytes(seq))?;
                outbox.insert(codec::u64_bytes(seq), bytes.as_slice())?;
                Ok(())
            })
            .map_err(StoreError::transaction)?;
        self.flush()?;
        Ok(seq)
    }

    /// Up to `limit` unacknowledged events, oldest first.
    pub fn pending_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let mut events = Vec::new();
        for item in self.outbox.iter().take(limit) {
            let (key, bytes) = item.map_err(StoreError::read)?;
            let mut event: AuditEvent = codec::from_cbor(&bytes, "an audit event")?;
            if event.seq != codec::read_u64(&key, "an outbox key")? {
                return Err(StoreError::corrupt(format!("audit event {} is stored under another seq", event.seq)));
            }
            if event.epoch == 0 {
                // Written before the database had an epoch: it is this database's.
                event.epoch = self.outbox_epoch;
            }
            events.push(event);
        }
        Ok(events)
    }

    /// Deletes every event with `seq <= up_to_seq` (atomically, flushed);
    /// returns how many were deleted. Acknowledging again is harmless.
    pub fn ack_audit(&self, up_to_seq: u64) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut count = 0;
        for item in self.outbox.range(..=codec::u64_bytes(up_to_seq)) {
            let (key, _) = item.map_err(StoreError::read)?;
            batch.remove(key);
            count += 1;
        }
        if count > 0 {
            self.outbox.apply_batch(batch).map_err(StoreError::write)?;
            self.flush()?;
        }
        Ok(count)
    }

    /// Number of unacknowledged events (counts the outbox: a failed append
    /// leaves a gap in the seqs, so the key range would overcount).
    pub fn outbox_depth(&self) -> Result<u64, StoreError> {
        Ok(self.outbox.len() as u64)
    }
}
