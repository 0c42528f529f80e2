use anyhow::Context as _;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let result = async {
        let env = faro_shared::Env::from_process();
        let config =
            faro_demand_collector::Config::from_env(&env).context("invalid configuration")?;
        faro_shared::telemetry::init("demand-collector", config.common.log_format);
        faro_demand_collector::run(config, faro_shared::shutdown::on_signal()).await
    }
    .await;
    faro_shared::service::exit_code("demand-collector", result)
}
