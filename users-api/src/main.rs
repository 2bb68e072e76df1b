//! users-api: `serve` (default), `migrate`, or `create-admin`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    users_api::domain::account::return_hash_memory_at_once();
    common::startup::run_main::<users_api::Config>().await
}
