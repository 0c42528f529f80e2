use anyhow::Context as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let env = faro_shared::Env::from_process();
        let config = faro_balancer::Config::from_env(&env).context("invalid configuration")?;
        faro_shared::telemetry::init("balancer", config.common.log_format);
        faro_balancer::run(config, faro_shared::shutdown::on_signal()).await
    }
    .await;
    faro_shared::service::exit_code("balancer", result)
}
