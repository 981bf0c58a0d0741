//! MQTT topic names (DESIGN.md §5).

use crate::ids::{DeviceId, ShardId};

pub const ROOT: &str = "facegate/v1";

/// `facegate/v1/shard/{shard}/delta`: signed deltas for every device of a shard.
pub fn shard_delta(shard: &ShardId) -> String {
    format!("{ROOT}/shard/{shard}/delta")
}

/// `facegate/v1/device/{device}/up`: device → server.
pub fn device_up(device: &DeviceId) -> String {
    format!("{ROOT}/device/{device}/up")
}

/// `facegate/v1/device/{device}/down`: server → one device, signed.
pub fn device_down(device: &DeviceId) -> String {
    format!("{ROOT}/device/{device}/down")
}

/// `facegate/v1/device/{device}/status`: retained status with a last will.
pub fn device_status(device: &DeviceId) -> String {
    format!("{ROOT}/device/{device}/status")
}

/// Every device's `up` topic, shared between server replicas (MQTT 5
/// shared subscription): each message goes to one replica of `group`.
pub fn shared_up(group: &str) -> String {
    format!("$share/{group}/{ROOT}/device/+/up")
}

/// Every device's status topic.
pub const ALL_STATUS: &str = "facegate/v1/device/+/status";

/// A parsed topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topic {
    ShardDelta(ShardId),
    DeviceUp(DeviceId),
    DeviceDown(DeviceId),
    DeviceStatus(DeviceId),
}

/// Parses one of our topics; `None` for anything else.
pub fn parse(topic: &str) -> Option<Topic> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["shard", shard, "delta"] => ShardId::new(*shard).ok().map(Topic::ShardDelta),
        ["device", device, leaf] => {
            let device = DeviceId::new(*device).ok()?;
            match *leaf {
                "up" => Some(Topic::DeviceUp(device)),
                "down" => Some(Topic::DeviceDown(device)),
                "status" => Some(Topic::DeviceStatus(device)),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_through_parse() {
        let d = DeviceId::new("kiosk-1").unwrap();
        let s = ShardId::new("lobby").unwrap();
        assert_eq!(parse(&shard_delta(&s)), Some(Topic::ShardDelta(s)));
        assert_eq!(parse(&device_up(&d)), Some(Topic::DeviceUp(d.clone())));
        assert_eq!(parse(&device_down(&d)), Some(Topic::DeviceDown(d.clone())));
        assert_eq!(parse(&device_status(&d)), Some(Topic::DeviceStatus(d)));
    }

    #[test]
    fn foreign_and_malformed_topics_do_not_parse() {
        for t in [
            "facegate/v2/device/a/up",
            "facegate/v1/device/a/b/up",
            "facegate/v1/device/+/up",
            "other",
            "facegate/v1/shard/x/snapshot",
        ] {
            assert_eq!(parse(t), None, "{t}");
        }
    }
}
