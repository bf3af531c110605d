//! End-to-end walks on a real Kubernetes API server.
//!
//! With `KUBEBUILDER_ASSETS` naming envtest binaries (etcd, kube-apiserver and optionally
//! kube-controller-manager), the suite starts its own throwaway control plane once per run,
//! installs the Waymark CRD, the Gateway API CRDs (`WAYMARK_E2E_GATEWAY_CRDS`) and the
//! controller's RBAC, and tears it down at the end, also when a walk fails. Without it, the
//! suite uses the cluster in `KUBECONFIG`. With neither, every walk fails under `CI=true` and
//! prints `SKIPPED` otherwise.
//!
//! Each walk gets its own namespace and an in-process controller (the same loop as
//! `waymark controller`, watching only that namespace) that talks to the API server as the
//! `waymark-controller` ServiceAccount with exactly the ClusterRole of `config/rbac/`. Nothing
//! runs pods on the suite's control plane: simulated kubelets mark Deployments available by
//! patching their status (on another cluster, `WAYMARK_E2E_SIMULATE_READINESS=1` does the same).
//!
//! The analysis walks also need the `prometheus` binary (Debian's package): it starts one on a
//! loopback port, scraping request counters the walk serves.

mod canary;
mod children;
mod control_plane;
mod delete;
mod evidence;
mod faults;
mod fixtures;
mod hostile;
mod install;
mod kubelet;
mod operate;
mod prepare;
mod quiet;
mod restart;
mod support;
mod validation;

#[path = "../tests/common/mod.rs"]
mod common;
// The walks name the Prometheus helpers `crate::prometheus_support`.
use common::prometheus as prometheus_support;

#[path = "../tests/common/helm.rs"]
mod helm_support;

use std::process::ExitCode;

use support::{private_trial, trial};

macro_rules! walks {
    ($($module:ident :: $walk:ident),* $(,)?) => {
        vec![$(trial(stringify!($walk), |env| Box::pin($module::$walk(env)))),*]
    };
}

fn main() -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    let plane = support::setup();
    let mut trials = walks![
        canary::first_release_becomes_healthy_with_labelled_children,
        canary::a_new_image_walks_every_step_to_promotion,
        canary::abort_sends_traffic_back_to_stable_before_the_canary_goes,
        canary::a_missing_http_route_is_named_in_a_condition,
        canary::a_canary_burning_its_error_budget_is_rolled_back_by_analysis,
        evidence::a_canary_without_data_gets_no_more_than_its_first_step,
        quiet::a_timed_pause_leaves_the_release_still,
        quiet::a_settled_release_and_its_children_are_not_written,
        quiet::a_first_release_is_not_healthy_before_its_stable_is_available,
        restart::restarts_during_a_canary_resume_where_it_stood,
        restart::restarts_while_failing_and_during_a_rollback_finish_the_rollback,
        restart::a_route_reapplied_from_git_gets_its_weights_back,
        delete::deleted_mid_canary_the_route_is_given_back_before_the_release_goes,
        delete::deleted_mid_canary_with_cascade_orphan_the_route_sends_all_to_the_orphaned_stable,
        delete::deleted_mid_canary_with_cascade_foreground_the_route_is_given_back,
        delete::deleted_mid_canary_after_its_route_the_release_is_not_held,
        delete::a_settled_release_has_no_finalizer_and_is_deleted_at_once,
        children::deleted_children_are_recreated_and_the_canary_waits_for_its_pods,
        children::an_object_waymark_did_not_create_is_not_taken_over,
        children::a_write_refused_by_a_quota_is_shown_in_the_status,
        operate::the_command_line_promotes_aborts_and_retries,
        operate::a_user_with_edit_promotes_in_their_namespace_only,
        operate::abort_during_promotion_the_cli_answer_and_the_outcome_agree,
        install::the_helm_chart_applies_to_the_api_server,
        hostile::a_selector_change_is_refused_naming_spec_selector,
        hostile::every_hostile_release_is_refused_or_gets_spec_valid,
        validation::an_invalid_query_is_spec_valid_false_before_any_canary_deployment,
        validation::a_missing_prometheus_secret_is_named_until_it_is_created,
    ];
    // Walks that stop or break their control plane get one of their own.
    trials.extend([
        private_trial(
            "an_api_server_restart_mid_canary_is_acted_on_within_seconds",
            |env| Box::pin(faults::an_api_server_restart_mid_canary_is_acted_on_within_seconds(env)),
        ),
        private_trial(
            "a_removed_release_crd_is_named_and_its_return_brings_the_controller_back",
            |env| {
                Box::pin(
                    faults::a_removed_release_crd_is_named_and_its_return_brings_the_controller_back(
                        env,
                    ),
                )
            },
        ),
    ]);
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the control plane before exiting: `exit` would skip its destructor.
    drop(plane);
    conclusion.exit_code()
}
