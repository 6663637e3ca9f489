//! A topic exchange and queues of a test's own on the real RabbitMQ, removed afterwards; and what
//! tests do there: publish as a relay would, wait for a consumer.

use super::helpers::{RETRY_DELAYS_MS, amqp_base, as_user, ensure_broker_users, topics};

/// A topic exchange of a test's own; its queues and itself are deleted when dropped.
pub struct TestBroker {
    pub exchange: String,
}

impl TestBroker {
    pub fn new() -> Self {
        ensure_broker_users();
        Self {
            exchange: format!("test.{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// The queues hosts declare for `component` on this exchange.
    pub fn queues(&self, component: &str) -> Vec<String> {
        let queue = format!("{}.{component}.{}", self.exchange, topics(component).1);
        let mut queues = vec![format!("{queue}.dead")];
        queues.extend(
            RETRY_DELAYS_MS
                .iter()
                .map(|ms| format!("{queue}.retry.{ms}ms")),
        );
        queues.push(queue);
        queues
    }

    /// Waits until `component`'s consumer is attached to its subscription's queue (so an event
    /// published now is routed to it, not dropped as unroutable).
    pub async fn wait_for_consumer(&self, component: &str) {
        let queue = format!("{}.{component}.{}", self.exchange, topics(component).1);
        let started = std::time::Instant::now();
        loop {
            // A failed passive declare closes its channel: a fresh one each time.
            let channel = Self::channel().await;
            let passive = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            if let Ok(declared) = channel
                .queue_declare(queue.as_str().into(), passive, Default::default())
                .await
                && declared.consumer_count() > 0
            {
                return;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "no consumer on {queue}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The dead-letter queue of `component`'s subscription.
    pub fn dead_letters(&self, component: &str) -> String {
        format!("{}.{component}.{}.dead", self.exchange, topics(component).1)
    }

    /// A channel as guest, which may do anything in the tests' vhost.
    pub async fn channel() -> lapin::Channel {
        Self::channel_as(&amqp_base()).await
    }

    /// A channel logged in with `url`, with publisher confirms.
    pub async fn channel_as(url: &str) -> lapin::Channel {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot reach RabbitMQ at {}: {err}; is it running?",
                    amqp_base()
                )
            });
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        channel
    }

    /// Publishes `body` as the topic's publisher's relay would (its broker user, stamped as
    /// `user_id`), and waits for the broker's confirmation.
    pub async fn publish(&self, topic: &str, body: &[u8]) {
        let publisher = ["orders", "invoices"]
            .into_iter()
            .find(|c| topics(c).0 == topic)
            .expect("a topic of the tests");
        self.publish_as(publisher, topic, body, lapin::BasicProperties::default())
            .await;
    }

    /// Publishes each of `bodies` to `topic` as its publisher, on one channel, and waits for the
    /// broker to confirm them all.
    pub async fn publish_many(&self, topic: &str, bodies: impl IntoIterator<Item = Vec<u8>>) {
        let publisher = ["orders", "invoices"]
            .into_iter()
            .find(|c| topics(c).0 == topic)
            .expect("a topic of the tests");
        let channel = Self::channel_as(&as_user(&amqp_base(), publisher)).await;
        let mut confirms = Vec::new();
        for body in bodies {
            let properties = lapin::BasicProperties::default()
                .with_delivery_mode(2)
                .with_user_id(publisher.into());
            let options = lapin::options::BasicPublishOptions::default();
            confirms.push(
                channel
                    .basic_publish(
                        self.exchange.as_str().into(),
                        topic.into(),
                        options,
                        &body,
                        properties,
                    )
                    .await
                    .expect("publish"),
            );
        }
        for confirm in confirms {
            confirm.await.expect("confirmed");
        }
    }

    /// Messages in `queue` now.
    pub async fn depth(queue: &str) -> u32 {
        let channel = Self::channel().await;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.into(), passive, Default::default())
            .await
            .expect("queue")
            .message_count()
    }

    /// Publishes `body` logged in as `user`, with `properties` and `user_id` set to `user`.
    pub async fn publish_as(
        &self,
        user: &str,
        topic: &str,
        body: &[u8],
        properties: lapin::BasicProperties,
    ) {
        let channel = Self::channel_as(&as_user(&amqp_base(), user)).await;
        channel
            .basic_publish(
                self.exchange.as_str().into(),
                topic.into(),
                lapin::options::BasicPublishOptions::default(),
                body,
                properties.with_delivery_mode(2).with_user_id(user.into()),
            )
            .await
            .expect("publish")
            .await
            .expect("confirmed");
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let exchange = self.exchange.clone();
        let queues: Vec<String> = ["orders", "invoices"]
            .iter()
            .flat_map(|c| self.queues(c))
            .collect();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let channel = TestBroker::channel().await;
                for queue in queues {
                    let _ = channel
                        .queue_delete(queue.as_str().into(), Default::default())
                        .await;
                }
                let _ = channel
                    .exchange_delete(exchange.as_str().into(), Default::default())
                    .await;
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}
