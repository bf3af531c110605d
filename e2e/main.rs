//! End-to-end walks on a real Kubernetes API server.
//!
//! The suite writes only to a cluster it was told about. With `KUBEBUILDER_ASSETS` naming
//! envtest binaries (etcd, kube-apiserver, kube-controller-manager), it starts its own
//! throwaway control plane once per run, installs the Waymark CRD, the Gateway API CRDs
//! (`WAYMARK_E2E_GATEWAY_CRDS`) and the controller's RBAC, and tears it down at the end, also
//! when a walk fails. With `WAYMARK_E2E_CONTEXT` naming a kubeconfig context, it uses that
//! cluster instead and says so. With neither, every walk fails under `CI=true` and prints
//! `SKIPPED` otherwise; the kubeconfig's current context is never used unasked.
//!
//! Each walk gets its own namespace and an in-process controller (the same loop as
//! `waymark controller`, watching only that namespace) that talks to the API server as the
//! `waymark-controller` ServiceAccount with exactly the ClusterRole of `config/rbac/`. The
//! control plane runs the real Deployment, ReplicaSet and EndpointSlice controllers; a simulated
//! node per walk binds the namespace's pods and reports them Running and Ready
//! ([`kubelet`]; on a named cluster without kubelets, `WAYMARK_E2E_SIMULATE_KUBELET=1`).
//!
//! The analysis walks also need the `prometheus` binary (Debian's package): it starts one on a
//! loopback port, scraping request counters the walk serves.

mod canary;
mod children;
mod cohorts;
mod control_plane;
mod dashboard;
mod delete;
mod evidence;
mod faults;
mod fixtures;
mod grpc;
mod hostile;
mod install;
mod kubelet;
mod notify;
mod operate;
mod outcome;
mod prepare;
mod quickstart;
mod quiet;
mod restart;
mod scale;
mod selfmetrics;
mod support;
mod validation;
mod workload;

#[path = "../tests/common/mod.rs"]
mod common;
// The walks name the Prometheus helpers `crate::prometheus_support`.
use common::prometheus as prometheus_support;

#[path = "../tests/common/helm.rs"]
mod helm_support;

use std::process::ExitCode;

use support::{private_trial, trial};

/// A check of the harness itself: needs no cluster, a panic fails it.
fn unit(name: &'static str, check: fn()) -> libtest_mimic::Trial {
    libtest_mimic::Trial::test(name, move || {
        check();
        Ok(())
    })
}

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
        canary::a_replica_split_canary_at_25_percent_is_one_of_four_ready_endpoints,
        evidence::a_canary_without_data_gets_no_more_than_its_first_step,
        quiet::a_timed_pause_leaves_the_release_still,
        quiet::a_settled_release_and_its_children_are_not_written,
        quiet::a_first_release_is_not_healthy_before_its_stable_is_available,
        quiet::a_status_patch_over_a_changed_release_is_refused_as_stale,
        restart::restarts_during_a_canary_resume_where_it_stood,
        restart::restarts_while_failing_and_during_a_rollback_finish_the_rollback,
        restart::a_route_reapplied_from_git_gets_its_weights_back,
        cohorts::a_cohort_a_mirror_and_weights_walk_to_promotion_and_leave_the_users_rules,
        cohorts::a_controller_stopped_mid_canary_and_an_abort_leave_no_cohort_or_mirror,
        cohorts::an_invalid_cohort_match_is_refused_or_named_before_the_canary,
        cohorts::a_release_deleted_with_a_cohort_at_weight_0_gives_the_route_back_first,
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
        operate::list_and_kubectl_get_wide_show_where_each_release_stands,
        outcome::a_promoted_canarys_history_entry_gets_its_roadmap_outcome,
        install::the_helm_chart_applies_to_the_api_server,
        quickstart::the_quick_start_walks_the_examples_to_a_promotion,
        quickstart::a_release_in_a_deleted_namespace_does_not_fight_for_its_services,
        hostile::a_selector_change_is_refused_naming_spec_selector,
        hostile::every_hostile_release_is_refused_or_gets_spec_valid,
        validation::an_invalid_query_is_spec_valid_false_before_any_canary_deployment,
        validation::a_missing_prometheus_secret_is_named_until_it_is_created,
        selfmetrics::the_controller_reports_its_build_leadership_api_requests_and_process,
        notify::notifications_arrive_once_per_configured_transition_and_a_failing_target_is_retried,
        scale::a_release_scaled_through_its_scale_subresource_mid_canary_keeps_its_step,
        scale::a_routed_canary_scaled_through_its_scale_subresource_keeps_its_route_weight,
        workload::a_deployment_is_migrated_progressively_edited_and_given_back_on_delete,
        workload::a_bad_workload_ref_is_refused_or_named_until_fixed_then_on_success_hands_over,
        workload::with_scale_down_never_the_deployment_keeps_its_pods_and_the_release_goes_at_once,
        dashboard::a_canary_weight_change_appears_on_the_dashboard_without_a_reload,
        grpc::a_gateway_class_without_session_persistence_refuses_it_naming_the_field,
    ];
    // Walks that stop or break their control plane get one of their own (the GRPCRoute walk
    // starts without the GRPCRoute CRD and installs it: no other walk may see either).
    trials.extend([
        private_trial(
            "a_grpc_route_canary_moves_its_weights_and_a_deletion_gives_the_route_back",
            |env| {
                Box::pin(
                    grpc::a_grpc_route_canary_moves_its_weights_and_a_deletion_gives_the_route_back(
                        env,
                    ),
                )
            },
        ),
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
    // The harness's own decisions, checked without a cluster.
    trials.extend([
        unit(
            "the_cluster_is_used_only_when_named",
            support::the_cluster_is_used_only_when_named,
        ),
        unit(
            "base64_decodes_what_webdriver_sends",
            dashboard::base64_decodes_what_webdriver_sends,
        ),
        unit(
            "the_reconcile_count_is_read_from_metrics",
            support::the_reconcile_count_is_read_from_metrics,
        ),
        unit(
            "the_simulated_node_follows_the_pod_lifecycle",
            kubelet::decisions_follow_the_pod_lifecycle,
        ),
        unit(
            "every_simulated_pod_gets_an_address_of_its_own",
            kubelet::every_pod_gets_an_address_of_its_own,
        ),
        unit(
            "simulated_start_delays_vary_within_their_range",
            kubelet::start_delays_vary_within_their_range,
        ),
    ]);
    let conclusion = libtest_mimic::run(&args, trials);
    // Stop the control plane before exiting: `exit` would skip its destructor.
    drop(plane);
    conclusion.exit_code()
}
