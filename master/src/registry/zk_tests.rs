//! The registry in ZooKeeper ([`agora_ha::zk_store::ZkStore`]), against the real ZooKeeper of `scripts/test` (`AGORA_TEST_ZK`, default 127.0.0.1:2181).

use agora_ha::store::{StateStore, StoreError};
use agora_ha::zk_store::ZkStore;
use zookeeper_client as zk;

use super::{AgentRecord, Registry};

async fn client() -> zk::Client {
    let servers = std::env::var("AGORA_TEST_ZK").unwrap_or_else(|_| "127.0.0.1:2181".into());
    agora_ha::detector::connect(&servers, std::time::Duration::from_secs(10))
        .await
        .expect("ZooKeeper answers (scripts/test starts it)")
}

fn unique_path(test: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/agora-unit-{test}-{n}")
}

async fn fence(c: &zk::Client, path: &str) -> String {
    let opts = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    c.mkdir(path, &opts).await.expect("mkdir");
    let fence = format!("{path}/fence");
    c.create(
        &fence,
        b"",
        &zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all()),
    )
    .await
    .expect("fence");
    fence
}

#[tokio::test]
async fn a_registry_of_fifty_thousand_agents_is_split_and_read_back_whole() {
    let c = client().await;
    let path = unique_path("big");
    let store = ZkStore::new(c.clone(), &path, fence(&c, &path).await);
    assert_eq!(store.load().await.expect("load"), None);
    let mut reg = Registry::default();
    for i in 0..50_000 {
        reg.agents.insert(
            format!("0123456789ab-S{i}"),
            AgentRecord {
                hostname: format!("worker-{i:05}.rack-{}.example.com", i % 40),
                ..Default::default()
            },
        );
    }
    let bytes = reg.to_bytes();
    assert!(bytes.len() > 2 * 1024 * 1024, "{} bytes", bytes.len());
    let v1 = store.store(bytes.clone(), None).await.expect("first write");
    let got = store.load().await.expect("load").expect("stored");
    assert_eq!(got.version, v1);
    assert_eq!(Registry::from_bytes(&got.data, "zk").expect("parse"), reg);
    // A second generation replaces the first, whose chunks are deleted.
    reg.weights.insert("web".into(), 2.0);
    let v2 = store
        .store(reg.to_bytes(), Some(v1))
        .await
        .expect("second write");
    let children = c
        .list_children(&format!("{path}/registry"))
        .await
        .expect("ls");
    assert!(
        children
            .iter()
            .all(|n| n.starts_with(&format!("g{}-", v1 + 2))),
        "{children:?}"
    );
    let got = store.load().await.expect("load").expect("stored");
    assert_eq!(got.version, v2);
    assert_eq!(Registry::from_bytes(&got.data, "zk").expect("parse"), reg);
    // A stale version is refused.
    let err = store.store(reg.to_bytes(), Some(v1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
}

#[tokio::test]
async fn a_writer_whose_fence_is_gone_cannot_write() {
    let c = client().await;
    let path = unique_path("fence");
    let fence_path = fence(&c, &path).await;
    let store = ZkStore::new(c.clone(), &path, fence_path.clone());
    let v1 = store
        .store(Registry::default().to_bytes(), None)
        .await
        .expect("write");
    c.delete(&fence_path, None).await.expect("remove the fence");
    let err = store
        .store(Registry::default().to_bytes(), Some(v1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        store.load().await.expect("load").expect("stored").version,
        v1
    );
}
