//! One client connection through the gate, as a state machine: frames in
//! (from the client or from the broker), actions out (frames to forward or
//! to answer with, denials to log and count). No I/O here; the shell is
//! [`super::gate`].
//!
//! Only the packets that carry a topic are decoded (CONNECT, PUBLISH,
//! SUBSCRIBE, and the SUBACK and PUBREL that answer what the gate changed);
//! every other frame, and every frame of the server's own connections,
//! passes through byte for byte.

use std::collections::{HashMap, HashSet};

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectReturnCode, Login, Packet, PubAck, PubAckReason, PubComp, PubRec, PubRecReason, SubAck,
    SubscribeReasonCode,
};

use super::acl::{Acl, Identity};
use super::frame::{self, packet_type};

/// What the shell does with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the broker.
    ToBroker(Bytes),
    /// Write these bytes to the client.
    ToClient(Bytes),
    /// The client asked for something the ACL forbids (`publish` or
    /// `subscribe`); it was refused with a reason code.
    Denied { operation: &'static str, topic: String },
    /// The broker had a message for the client on a topic it may not read
    /// (any more): not delivered, acknowledged to the broker.
    Dropped { topic: String },
    /// End the connection (after the actions before this one).
    Close(&'static str),
}

/// Why a CONNECT was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an MQTT 5 CONNECT.
    Malformed,
    /// An unknown, pending or revoked device.
    NotAllowed,
    /// A device's client id is not its certificate's CN (a session takeover).
    ClientId,
    /// A last will on a topic the client may not publish on.
    Will,
}

impl Refusal {
    /// Label for logs and counters.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::NotAllowed => "not_allowed",
            Self::ClientId => "client_id",
            Self::Will => "will",
        }
    }

    fn code(self) -> ConnectReturnCode {
        match self {
            Self::Malformed => ConnectReturnCode::MalformedPacket,
            Self::NotAllowed | Self::Will => ConnectReturnCode::NotAuthorized,
            Self::ClientId => ConnectReturnCode::ClientIdentifierNotValid,
        }
    }

    /// The CONNACK that tells the client.
    pub fn connack(self) -> Bytes {
        encode(&Packet::ConnAck(ConnAck { session_present: false, code: self.code(), properties: None }))
            .unwrap_or_default()
    }
}

/// The outcome of a client's CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// Forward `frame` (the CONNECT with the gate's login) to the broker.
    Accept {
        session: Session,
        client_id: String,
        frame: Bytes,
    },
    Refuse {
        refusal: Refusal,
        client_id: String,
    },
}

/// Checks a client's first frame. `certificate` is the identity its TLS
/// certificate proved; `None` on the plain (demo) listener, where the
/// client id is taken as a device's id (never the server's) and the same
/// ACL applies. The CONNECT is forwarded with `login` (the broker accepts
/// no other) and without a topic-alias maximum (so the broker never sends
/// an alias instead of a topic this gate must see).
pub fn check_connect(first: &Bytes, certificate: Option<&Identity>, acl: &Acl, login: &Login) -> Connect {
    let Some(Packet::Connect(mut connect, will, _)) = decode(first) else {
        return Connect::Refuse { refusal: Refusal::Malformed, client_id: String::new() };
    };
    let client_id = connect.client_id.clone();
    let refuse = |refusal| Connect::Refuse { refusal, client_id: client_id.clone() };
    let identity = match certificate {
        Some(identity) => identity.clone(),
        None => Identity::Device(client_id.clone()),
    };
    if !acl.may_connect(&identity) {
        return refuse(Refusal::NotAllowed);
    }
    if matches!(identity, Identity::Device(ref id) if *id != client_id) {
        return refuse(Refusal::ClientId);
    }
    if let Some(will) = &will
        && !acl.may_publish(&identity, &String::from_utf8_lossy(&will.topic))
    {
        return refuse(Refusal::Will);
    }
    if let Some(properties) = &mut connect.properties {
        properties.topic_alias_max = None;
    }
    match encode(&Packet::Connect(connect, will, Some(login.clone()))) {
        Some(frame) => Connect::Accept { session: Session::new(identity), client_id, frame },
        None => refuse(Refusal::Malformed),
    }
}

/// The state of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    identity: Identity,
    /// Topic aliases the client has set (client → broker).
    client_aliases: HashMap<u16, Bytes>,
    /// SUBSCRIBEs forwarded without their refused filters: packet id →
    /// for each filter the client sent, whether it went to the broker.
    split_subscribes: HashMap<u16, Vec<bool>>,
    /// QoS 2 deliveries dropped (answered PUBREC): their PUBREL is answered
    /// here too.
    dropped_qos2: HashSet<u16>,
}

impl Session {
    pub fn new(identity: Identity) -> Self {
        Self {
            identity,
            client_aliases: HashMap::new(),
            split_subscribes: HashMap::new(),
            dropped_qos2: HashSet::new(),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// A frame from the client.
    pub fn from_client(&mut self, frame: Bytes, acl: &Acl) -> Vec<Action> {
        match (packet_type(&frame), &self.identity) {
            (frame::CONNECT | frame::AUTH, _) => vec![Action::Close("a second CONNECT or an AUTH")],
            (_, Identity::Server) => vec![Action::ToBroker(frame)],
            (frame::PUBLISH, _) => self.client_publish(frame, acl),
            (frame::SUBSCRIBE, _) => self.client_subscribe(frame, acl),
            _ => vec![Action::ToBroker(frame)],
        }
    }

    /// A frame from the broker.
    pub fn from_broker(&mut self, frame: Bytes, acl: &Acl) -> Vec<Action> {
        match (packet_type(&frame), &self.identity) {
            (_, Identity::Server) => vec![Action::ToClient(frame)],
            (frame::PUBLISH, _) => self.delivery(frame, acl),
            (frame::PUBREL, _) if !self.dropped_qos2.is_empty() => self.broker_pubrel(frame),
            (frame::SUBACK, _) if !self.split_subscribes.is_empty() => self.broker_suback(frame),
            _ => vec![Action::ToClient(frame)],
        }
    }

    fn client_publish(&mut self, frame: Bytes, acl: &Acl) -> Vec<Action> {
        let Some(Packet::Publish(publish)) = decode(&frame) else {
            return vec![Action::Close("a malformed PUBLISH")];
        };
        let alias = publish.properties.as_ref().and_then(|p| p.topic_alias);
        let topic = match (publish.topic.is_empty(), alias) {
            (false, Some(alias)) => {
                self.client_aliases.insert(alias, publish.topic.clone());
                publish.topic.clone()
            }
            (false, None) => publish.topic.clone(),
            (true, Some(alias)) => match self.client_aliases.get(&alias) {
                Some(topic) => topic.clone(),
                None => return vec![Action::Close("an unknown topic alias")],
            },
            (true, None) => return vec![Action::Close("a PUBLISH without a topic")],
        };
        let topic = String::from_utf8_lossy(&topic).into_owned();
        if acl.may_publish(&self.identity, &topic) {
            return vec![Action::ToBroker(frame)];
        }
        let answer = match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => encode(&Packet::PubAck(PubAck {
                pkid: publish.pkid,
                reason: PubAckReason::NotAuthorized,
                properties: None,
            })),
            QoS::ExactlyOnce => encode(&Packet::PubRec(PubRec {
                pkid: publish.pkid,
                reason: PubRecReason::NotAuthorized,
                properties: None,
            })),
        };
        let mut actions = vec![Action::Denied { operation: "publish", topic }];
        actions.extend(answer.map(Action::ToClient));
        actions
    }

    fn client_subscribe(&mut self, frame: Bytes, acl: &Acl) -> Vec<Action> {
        let Some(Packet::Subscribe(mut subscribe)) = decode(&frame) else {
            return vec![Action::Close("a malformed SUBSCRIBE")];
        };
        let allowed: Vec<bool> = subscribe.filters.iter().map(|f| acl.may_subscribe(&self.identity, &f.path)).collect();
        if allowed.iter().all(|a| *a) {
            return vec![Action::ToBroker(frame)];
        }
        let mut actions: Vec<Action> = subscribe
            .filters
            .iter()
            .zip(&allowed)
            .filter(|(_, allowed)| !**allowed)
            .map(|(f, _)| Action::Denied { operation: "subscribe", topic: f.path.clone() })
            .collect();
        if allowed.iter().all(|a| !*a) {
            let ack = SubAck {
                pkid: subscribe.pkid,
                return_codes: vec![SubscribeReasonCode::NotAuthorized; allowed.len()],
                properties: None,
            };
            actions.extend(encode(&Packet::SubAck(ack)).map(Action::ToClient));
            return actions;
        }
        let mut keep = allowed.iter();
        subscribe.filters.retain(|_| keep.next().copied().unwrap_or(false));
        match encode(&Packet::Subscribe(subscribe.clone())) {
            Some(frame) => {
                self.split_subscribes.insert(subscribe.pkid, allowed);
                actions.push(Action::ToBroker(frame));
            }
            None => actions.push(Action::Close("a SUBSCRIBE that cannot be re-encoded")),
        }
        actions
    }

    fn delivery(&mut self, frame: Bytes, acl: &Acl) -> Vec<Action> {
        let Some(Packet::Publish(publish)) = decode(&frame) else {
            return vec![Action::Close("a malformed PUBLISH from the broker")];
        };
        if publish.topic.is_empty() {
            return vec![Action::Close("a topic alias from the broker")];
        }
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        if acl.may_read(&self.identity, &topic) {
            return vec![Action::ToClient(frame)];
        }
        let answer = match publish.qos {
            QoS::AtMostOnce => None,
            QoS::AtLeastOnce => encode(&Packet::PubAck(PubAck::new(publish.pkid, None))),
            QoS::ExactlyOnce => {
                self.dropped_qos2.insert(publish.pkid);
                encode(&Packet::PubRec(PubRec::new(publish.pkid, None)))
            }
        };
        let mut actions = vec![Action::Dropped { topic }];
        actions.extend(answer.map(Action::ToBroker));
        actions
    }

    fn broker_pubrel(&mut self, frame: Bytes) -> Vec<Action> {
        match decode(&frame) {
            Some(Packet::PubRel(rel)) if self.dropped_qos2.remove(&rel.pkid) => {
                encode(&Packet::PubComp(PubComp::new(rel.pkid, None))).map(Action::ToBroker).into_iter().collect()
            }
            _ => vec![Action::ToClient(frame)],
        }
    }

    fn broker_suback(&mut self, frame: Bytes) -> Vec<Action> {
        let Some(Packet::SubAck(mut ack)) = decode(&frame) else {
            return vec![Action::ToClient(frame)];
        };
        let Some(allowed) = self.split_subscribes.remove(&ack.pkid) else {
            return vec![Action::ToClient(frame)];
        };
        let mut granted = ack.return_codes.into_iter();
        ack.return_codes = allowed
            .iter()
            .map(|a| {
                if *a {
                    granted.next().unwrap_or(SubscribeReasonCode::Unspecified)
                } else {
                    SubscribeReasonCode::NotAuthorized
                }
            })
            .collect();
        match encode(&Packet::SubAck(ack)) {
            Some(frame) => vec![Action::ToClient(frame)],
            None => vec![Action::Close("a SUBACK that cannot be re-encoded")],
        }
    }
}

fn decode(frame: &Bytes) -> Option<Packet> {
    Packet::read(&mut BytesMut::from(&frame[..]), None).ok()
}

fn encode(packet: &Packet) -> Option<Bytes> {
    let mut out = BytesMut::new();
    packet.write(&mut out, None).ok()?;
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rumqttc::v5::mqttbytes::v5::{
        Connect as ConnectPacket, ConnectProperties, Filter, LastWill, Publish, Subscribe,
    };

    use super::super::acl::DeviceAccess;
    use super::*;

    fn acl() -> Acl {
        let device = |shards: &[&str]| DeviceAccess {
            active: true,
            shards: shards.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        };
        Acl::of([("door-1".to_string(), device(&["lobby"])), ("door-3".to_string(), device(&["lab"]))])
    }

    fn login() -> Login {
        Login::new("gate", "secret")
    }

    fn connect_frame(client_id: &str, will: Option<&str>) -> Bytes {
        let mut connect = ConnectPacket {
            keep_alive: 30,
            client_id: client_id.into(),
            clean_start: false,
            properties: Some(ConnectProperties::new()),
        };
        if let Some(p) = &mut connect.properties {
            p.topic_alias_max = Some(10);
            p.session_expiry_interval = Some(3600);
        }
        let will = will.map(|t| LastWill::new(t, "offline", QoS::AtLeastOnce, true, None));
        encode(&Packet::Connect(connect, will, None)).unwrap()
    }

    fn publish(topic: &str, qos: QoS, pkid: u16) -> Bytes {
        let mut p = Publish::new(topic, qos, b"x".to_vec(), None);
        p.pkid = pkid;
        encode(&Packet::Publish(p)).unwrap()
    }

    fn subscribe(pkid: u16, filters: &[&str]) -> Bytes {
        let mut s = Subscribe::new_many(filters.iter().map(|f| Filter::new(*f, QoS::AtLeastOnce)), None);
        s.pkid = pkid;
        encode(&Packet::Subscribe(s)).unwrap()
    }

    fn door(id: &str) -> Session {
        Session::new(Identity::Device(id.into()))
    }

    #[test]
    fn a_connect_must_name_the_certificate_and_is_forwarded_with_the_gates_login() {
        let cert = Identity::Device("door-1".into());
        let will = Some("facegate/v1/device/door-1/status");
        match check_connect(&connect_frame("door-1", will), Some(&cert), &acl(), &login()) {
            Connect::Accept { frame, client_id, .. } => {
                assert_eq!(client_id, "door-1");
                let Some(Packet::Connect(c, w, l)) = decode(&frame) else { panic!("not a CONNECT") };
                assert_eq!(l, Some(login()));
                assert_eq!(c.properties.as_ref().unwrap().topic_alias_max, None);
                assert_eq!(c.properties.as_ref().unwrap().session_expiry_interval, Some(3600));
                assert!(w.is_some());
            }
            other => panic!("refused: {other:?}"),
        }
        let refusal = |frame, cert: Option<&Identity>| match check_connect(&frame, cert, &acl(), &login()) {
            Connect::Refuse { refusal, .. } => refusal,
            Connect::Accept { .. } => panic!("accepted"),
        };
        assert_eq!(refusal(connect_frame("door-3", None), Some(&cert)), Refusal::ClientId, "a takeover");
        assert_eq!(refusal(connect_frame("", None), Some(&cert)), Refusal::ClientId);
        let other_will = Some("facegate/v1/device/door-3/status");
        assert_eq!(refusal(connect_frame("door-1", other_will), Some(&cert)), Refusal::Will);
        let stranger = Identity::Device("stranger".into());
        assert_eq!(refusal(connect_frame("stranger", None), Some(&stranger)), Refusal::NotAllowed);
        assert_eq!(refusal(Bytes::from_static(b"\x10\x02\x00\x00"), Some(&cert)), Refusal::Malformed);
        // Plain listener: the client id is a device's, never the server's.
        assert!(matches!(
            check_connect(&connect_frame("door-1", None), None, &acl(), &login()),
            Connect::Accept { .. }
        ));
        let server = crate::sync::pki::SERVER_IDENTITY;
        assert_eq!(refusal(connect_frame(server, None), None), Refusal::NotAllowed);
        // The server's certificate: any client id (one per replica).
        assert!(matches!(
            check_connect(&connect_frame("replica-2", None), Some(&Identity::Server), &acl(), &login()),
            Connect::Accept { .. }
        ));
        assert_eq!(
            decode(&Refusal::ClientId.connack()),
            Some(Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::ClientIdentifierNotValid,
                properties: None
            }))
        );
    }

    #[test]
    fn a_forbidden_publish_is_answered_not_authorized_and_not_forwarded() {
        let mut s = door("door-1");
        let own = publish("facegate/v1/device/door-1/up", QoS::AtLeastOnce, 7);
        assert_eq!(s.from_client(own.clone(), &acl()), vec![Action::ToBroker(own)]);
        let actions = s.from_client(publish("facegate/v1/device/door-3/up", QoS::AtLeastOnce, 8), &acl());
        assert_eq!(actions[0], Action::Denied { operation: "publish", topic: "facegate/v1/device/door-3/up".into() });
        let Action::ToClient(ack) = &actions[1] else { panic!("{actions:?}") };
        assert_eq!(
            decode(ack),
            Some(Packet::PubAck(PubAck { pkid: 8, reason: PubAckReason::NotAuthorized, properties: None }))
        );
        assert_eq!(actions.len(), 2);
        let qos0 = s.from_client(publish("facegate/v1/shard/lobby/delta", QoS::AtMostOnce, 0), &acl());
        assert!(matches!(qos0.as_slice(), [Action::Denied { .. }]), "{qos0:?}");
    }

    #[test]
    fn a_topic_alias_is_checked_against_the_topic_it_stands_for() {
        let mut s = door("door-1");
        let with_alias = |topic: &str, alias| {
            let mut p = Publish::new(topic, QoS::AtMostOnce, b"x".to_vec(), None);
            p.properties =
                Some(rumqttc::v5::mqttbytes::v5::PublishProperties { topic_alias: Some(alias), ..Default::default() });
            encode(&Packet::Publish(p)).unwrap()
        };
        assert!(matches!(
            s.from_client(with_alias("facegate/v1/device/door-3/up", 1), &acl())[0],
            Action::Denied { .. }
        ));
        assert!(matches!(s.from_client(with_alias("", 1), &acl())[0], Action::Denied { .. }));
        assert!(matches!(s.from_client(with_alias("facegate/v1/device/door-1/up", 2), &acl())[0], Action::ToBroker(_)));
        assert!(matches!(s.from_client(with_alias("", 2), &acl())[0], Action::ToBroker(_)));
        assert_eq!(s.from_client(with_alias("", 3), &acl()), vec![Action::Close("an unknown topic alias")]);
    }

    #[test]
    fn a_subscribe_keeps_its_allowed_filters_and_the_suback_reports_the_rest_not_authorized() {
        let mut s = door("door-3");
        let own = subscribe(1, &["facegate/v1/device/door-3/down", "facegate/v1/shard/lab/delta"]);
        assert_eq!(s.from_client(own.clone(), &acl()), vec![Action::ToBroker(own)]);

        let all_denied = s.from_client(subscribe(2, &["facegate/v1/#"]), &acl());
        assert_eq!(all_denied[0], Action::Denied { operation: "subscribe", topic: "facegate/v1/#".into() });
        let Action::ToClient(ack) = &all_denied[1] else { panic!("{all_denied:?}") };
        let Some(Packet::SubAck(ack)) = decode(ack) else { panic!("not a SUBACK") };
        assert_eq!((ack.pkid, ack.return_codes), (2, vec![SubscribeReasonCode::NotAuthorized]));

        let mixed = s.from_client(
            subscribe(
                3,
                &["facegate/v1/shard/lobby/delta", "facegate/v1/shard/lab/delta", "facegate/v1/device/+/down"],
            ),
            &acl(),
        );
        assert_eq!(mixed.len(), 3, "{mixed:?}");
        let Action::ToBroker(forwarded) = &mixed[2] else { panic!("{mixed:?}") };
        let Some(Packet::Subscribe(forwarded)) = decode(forwarded) else { panic!("not a SUBSCRIBE") };
        assert_eq!(
            forwarded.filters.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["facegate/v1/shard/lab/delta"]
        );
        let granted =
            SubAck { pkid: 3, return_codes: vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)], properties: None };
        let answer = s.from_broker(encode(&Packet::SubAck(granted)).unwrap(), &acl());
        let [Action::ToClient(answer)] = answer.as_slice() else { panic!("{answer:?}") };
        let Some(Packet::SubAck(answer)) = decode(answer) else { panic!("not a SUBACK") };
        assert_eq!(
            answer.return_codes,
            vec![
                SubscribeReasonCode::NotAuthorized,
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::NotAuthorized
            ]
        );
    }

    #[test]
    fn a_delivery_the_device_may_not_read_now_is_dropped_and_acknowledged_to_the_broker() {
        let mut s = door("door-1");
        let lobby = publish("facegate/v1/shard/lobby/delta", QoS::AtLeastOnce, 5);
        assert_eq!(s.from_broker(lobby.clone(), &acl()), vec![Action::ToClient(lobby.clone())]);
        // door-1 moved from the lobby to the lab: the lobby's deltas stop at once.
        let moved = Acl::of([(
            "door-1".to_string(),
            DeviceAccess { active: true, shards: ["lab".to_string()].into_iter().collect() },
        )]);
        let actions = s.from_broker(lobby, &moved);
        assert_eq!(actions[0], Action::Dropped { topic: "facegate/v1/shard/lobby/delta".into() });
        let Action::ToBroker(ack) = &actions[1] else { panic!("{actions:?}") };
        assert_eq!(decode(ack), Some(Packet::PubAck(PubAck::new(5, None))));
        // QoS 2: PUBREC now, and the broker's PUBREL answered with PUBCOMP here.
        let actions = s.from_broker(publish("facegate/v1/device/door-3/down", QoS::ExactlyOnce, 6), &acl());
        assert!(
            matches!(&actions[1], Action::ToBroker(rec) if decode(rec) == Some(Packet::PubRec(PubRec::new(6, None))))
        );
        let rel = encode(&Packet::PubRel(rumqttc::v5::mqttbytes::v5::PubRel::new(6, None))).unwrap();
        let actions = s.from_broker(rel, &acl());
        assert!(
            matches!(&actions[..], [Action::ToBroker(c)] if decode(c) == Some(Packet::PubComp(PubComp::new(6, None))))
        );
    }

    #[test]
    fn the_servers_frames_pass_byte_for_byte_but_a_second_connect_closes() {
        let mut s = Session::new(Identity::Server);
        let any = subscribe(1, &["$share/facegate/facegate/v1/device/+/up"]);
        assert_eq!(s.from_client(any.clone(), &Acl::default()), vec![Action::ToBroker(any)]);
        let p = publish("facegate/v1/device/door-1/up", QoS::AtLeastOnce, 2);
        assert_eq!(s.from_broker(p.clone(), &Acl::default()), vec![Action::ToClient(p)]);
        assert!(matches!(s.from_client(connect_frame("x", None), &Acl::default())[0], Action::Close(_)));
    }
}
