//! A fresh database per test on the server `TEST_DATABASE_URL` names, dropped afterwards.

use sqlx::Connection;

/// A database made for one test; dropped (with its connections) when this is dropped.
pub struct TempDb {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl TempDb {
    /// Creates a database with a random name next to the one `admin` names.
    pub async fn create(admin: &str) -> TempDb {
        let name = format!("cairn_test_{:016x}", rand::random::<u64>());
        let mut conn = sqlx::PgConnection::connect(admin).await.unwrap_or_else(|e| panic!("connect {admin}: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
        let mut url = url::Url::parse(admin).unwrap();
        url.set_path(&name);
        TempDb { admin: admin.to_string(), name, url: url.to_string() }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside another runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("[postgres] could not drop database {}: {e}", self.name);
        }
    }
}
