#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::startup::run_main::<users_api::Config>().await
}
