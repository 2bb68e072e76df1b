//! A database per test, dropped (with its connections) afterwards.

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

use super::*;

/// A database that exists for one test and is dropped (with its connections) afterwards.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let name = unique_id();
        let admin = Database::connect(admin_database_url())
            .await
            .expect("connect as admin to create a test database");
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        admin.close().await.ok();
        Self::named(&name)
    }

    /// The database `name` on the test server, made by someone else (a restore): dropped
    /// with this guard like one [`TestDatabase::create`] made.
    pub fn named(name: &str) -> Self {
        let base = admin_database_url();
        let url = match base.rfind('/') {
            Some(i) if base[..i].contains("://") && i > base.find("://").unwrap() + 2 => {
                format!("{}/{name}", &base[..i])
            }
            _ => format!("{base}/{name}"),
        };
        Self {
            name: name.to_owned(),
            url,
        }
    }

    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context guarantee: use a private runtime on a thread.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(admin_database_url()).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                            ))
                            .await;
                        admin.close().await.ok();
                    }
                });
            }
        })
        .join();
    }
}
