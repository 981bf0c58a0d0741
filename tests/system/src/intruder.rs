//! An MQTT client holding a provisioned device's certificate (a stolen
//! kiosk, or the position of a compromised broker when it holds the server's
//! own certificate): connects with any client id, subscribes and publishes
//! anything, and records what it receives.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use facegate_protocol::DeviceSigningKey;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};

#[derive(Debug)]
pub struct Intruder {
    runtime: tokio::runtime::Runtime,
    client: AsyncClient,
    pub received: mpsc::Receiver<(String, Vec<u8>)>,
    /// Whether the broker let it in and has not thrown it out since.
    pub connected: Arc<AtomicBool>,
}

impl Intruder {
    /// Connects with `tls` and client id `id`; waits until connected.
    pub fn connect(tls: Arc<rustls::ClientConfig>, id: &str, port: u16) -> Self {
        Self::try_connect(tls, id, port, Duration::from_secs(30)).expect("the intruder could not connect")
    }

    /// Connects; `None` when the broker did not let it in within `timeout`.
    pub fn try_connect(tls: Arc<rustls::ClientConfig>, id: &str, port: u16, timeout: Duration) -> Option<Self> {
        let mut options = MqttOptions::new(id, "localhost", port);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        options.set_max_packet_size(Some(4 * 1024 * 1024));
        options.set_keep_alive(Duration::from_secs(5));
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let (client, mut events) = AsyncClient::new(options, 64);
        let (tx, received) = mpsc::channel();
        let (connected_tx, first) = mpsc::channel();
        let connected = Arc::new(AtomicBool::new(false));
        let state = Arc::clone(&connected);
        runtime.spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        state.store(true, Ordering::SeqCst);
                        let _ = connected_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        let _ = tx.send((topic, p.payload.to_vec()));
                    }
                    Ok(Event::Incoming(Packet::Disconnect(_))) => state.store(false, Ordering::SeqCst),
                    Ok(_) => {}
                    Err(_) => {
                        state.store(false, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        first.recv_timeout(timeout).ok()?;
        Some(Self { runtime, client, received, connected })
    }

    pub fn subscribe(&self, topic: &str) {
        let _ = self.runtime.block_on(self.client.subscribe(topic, QoS::AtLeastOnce));
    }

    pub fn publish(&self, topic: &str, payload: Vec<u8>) {
        let _ = self.runtime.block_on(self.client.publish(topic, QoS::AtLeastOnce, false, payload));
    }

    /// Everything received within `wait`.
    pub fn drain(&self, wait: Duration) -> Vec<(String, Vec<u8>)> {
        let deadline = std::time::Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.received.recv_timeout(left) {
                Ok(message) => out.push(message),
                Err(_) => break,
            }
        }
        out
    }
}

/// The uplink signing key of the device provisioned into `sync_dir`.
pub fn device_signing_key(sync_dir: &Path) -> DeviceSigningKey {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let key = PrivateKeyDer::from_pem_file(sync_dir.join("device.key")).unwrap();
    DeviceSigningKey::from_pkcs8(key.secret_der()).unwrap()
}
