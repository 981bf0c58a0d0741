//! The connection task of the sync service: polls the MQTT event loop,
//! subscribes on every connect, reports the broker as a readiness
//! dependency and hands incoming publications to the handler.

use std::sync::Arc;
use std::time::Duration;

use facegate_protocol::sync::server::ServerSync;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{mpsc, watch};

use super::service::{SyncStats, until_stopped};
use crate::readiness::Dependency;

#[allow(clippy::too_many_arguments)]
pub(super) async fn connection_task(
    mut eventloop: EventLoop,
    client: AsyncClient,
    group: String,
    incoming: mpsc::Sender<(String, Vec<u8>)>,
    broker: Dependency,
    connected: Arc<std::sync::atomic::AtomicBool>,
    stats: Arc<SyncStats>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    loop {
        let event = tokio::select! {
            () = until_stopped(&mut stopped) => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                failures = 0;
                log::info!(session_present = ack.session_present; "connected to the MQTT broker");
                for topic in ServerSync::subscriptions(&group) {
                    if let Err(e) = client.subscribe(topic.clone(), QoS::AtLeastOnce).await {
                        log::warn!(error:% = e, topic = topic.as_str(); "subscribe failed");
                    }
                }
                connected.store(true, std::sync::atomic::Ordering::Release);
                broker.set(true);
                stats.count("connected");
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                if incoming.send((topic, publish.payload.to_vec())).await.is_err() {
                    break;
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                for code in &ack.return_codes {
                    if !matches!(code, rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)) {
                        log::error!(code:? = code; "the broker refused a subscription of the sync service");
                        stats.count("subscribe_refused");
                    }
                }
            }
            Ok(Event::Incoming(Packet::Disconnect(d))) => {
                log::warn!(reason:? = d.reason_code; "the broker disconnected the sync service");
            }
            Ok(_) => {}
            Err(e) => {
                connected.store(false, std::sync::atomic::Ordering::Release);
                broker.set(false);
                stats.count("connection_error");
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis((100u64 << failures.min(6)).min(5_000));
                log::warn!(error:% = e, retry_ms = delay.as_millis() as u64; "MQTT connection failed");
                tokio::select! {
                    () = until_stopped(&mut stopped) => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let _ = client.try_disconnect();
    broker.set(false);
}
