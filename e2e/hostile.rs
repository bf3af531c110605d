//! Hostile input on a real API server: the mutations of `tests/common/mutations.rs`, each
//! created as its own Release, are refused naming the field or get a status from the
//! controller saying whether the spec is valid; and a Release's selector cannot change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::mutations::{self, Expect, Mutation, names_field};
use crate::fixtures::{create_release, release, ship};
use crate::support::{E2E_MANAGER, Env, eventually_within};
use waymark::api::Release;

pub async fn a_selector_change_is_refused_naming_spec_selector(env: Env) {
    let name = "pinned";
    create_release(&env, &release(name, name, json!([{"setWeight": 50}]))).await;

    let patch = json!({"spec": {
        "selector": {"matchLabels": {"app": name, "tier": "web"}},
        "template": {"metadata": {"labels": {"app": name, "tier": "web"}}}
    }});
    let refused = env
        .releases()
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("the API server refuses a new selector");
    let kube::Error::Api(response) = refused else {
        panic!("not a refusal from the API server: {refused}");
    };
    assert_eq!(response.code, 422, "{response:?}");
    assert!(
        response
            .message
            .contains("spec.selector: Invalid value: \"object\": spec.selector is immutable"),
        "{}",
        response.message
    );
    assert!(
        response.message.contains("create a new Release"),
        "{}",
        response.message
    );
    let stored = env.releases().get(name).await.expect("the Release");
    assert_eq!(
        stored.spec.selector.match_labels,
        Some(BTreeMap::from([("app".to_string(), name.to_string())])),
        "the selector is unchanged"
    );

    // Everything else still changes: a new image and roadmap item are accepted.
    ship(&env, name, "nginx:1.29-alpine", "E2E-9").await;
    let shipped = env.releases().get(name).await.expect("the Release");
    assert_eq!(shipped.spec.roadmap.item, "E2E-9");

    // As Argo CD writes it: a server-side apply of the whole manifest with another selector.
    let mut applied = serde_json::to_value(&shipped).expect("the Release as JSON");
    applied["metadata"] = json!({"name": name});
    if let Some(object) = applied.as_object_mut() {
        object.remove("status");
    }
    applied["spec"]["selector"] = json!({"matchLabels": {"app": "other"}});
    let refused = env
        .releases()
        .patch(
            name,
            &PatchParams::apply(E2E_MANAGER).force(),
            &Patch::Apply(&applied),
        )
        .await
        .expect_err("a server-side apply with a new selector is refused");
    assert!(
        refused.to_string().contains("spec.selector is immutable"),
        "{refused}"
    );
}

/// What the API server and the controller did with one mutation.
enum Seen {
    Refused(String),
    Stored(String),
}

pub async fn every_hostile_release_is_refused_or_gets_spec_valid(env: Env) {
    let started = Instant::now();
    let schema = serde_json::to_value(waymark::api::crd::release_crd()).expect("the CRD")["spec"]
        ["versions"][0]["schema"]["openAPIV3Schema"]
        .clone();
    let mut base = mutations::example_release();
    base["metadata"] = json!({"name": "checkout"});
    let all = mutations::mutations(&schema);
    let api: Api<DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &ApiResource::erase::<Release>(&()),
    );

    let mut seen: Vec<(&Mutation, Seen)> = Vec::new();
    let mut failures = Vec::new();
    for (index, mutation) in all.iter().enumerate() {
        let mut manifest = base.clone();
        manifest["metadata"]["name"] = json!(format!("hostile-{index:03}"));
        let manifest = mutation.apply(&manifest);
        let object: DynamicObject = serde_json::from_value(manifest)
            .unwrap_or_else(|error| panic!("{}: not an object: {error}", mutation.name));
        match api.create(&PostParams::default(), &object).await {
            Ok(created) => {
                // One stored Release the controller cannot decode fails its whole list: no
                // Release would get a status. Say which one at once.
                if let Err(error) =
                    serde_json::to_value(&created).and_then(serde_json::from_value::<Release>)
                {
                    failures.push(format!(
                        "{}: stored as {}, which the controller cannot decode: {error}",
                        mutation.name,
                        created.name_any()
                    ));
                }
                seen.push((mutation, Seen::Stored(created.name_any())));
            }
            Err(kube::Error::Api(response)) if response.code == 422 || response.code == 400 => {
                seen.push((mutation, Seen::Refused(response.message)))
            }
            Err(error) => panic!("{}: creating it failed: {error}", mutation.name),
        }
    }
    let created = started.elapsed();
    assert!(
        failures.is_empty(),
        "the API server stores Releases the controller cannot read:\n{}",
        failures.join("\n")
    );

    let stored: Vec<&str> = seen
        .iter()
        .filter_map(|(_, seen)| match seen {
            Seen::Stored(name) => Some(name.as_str()),
            Seen::Refused(_) => None,
        })
        .collect();
    // Every stored Release gets a status saying whether its spec is valid: none is left
    // without one (a Release the controller cannot decode would be, and so would all others).
    let statuses = eventually_within(
        Duration::from_secs(240),
        &format!(
            "a SpecValid condition on each of {} stored Releases",
            stored.len()
        ),
        || async {
            let listed = api
                .list(&ListParams::default())
                .await
                .map_err(|error| format!("cannot list Releases: {error}"))?;
            let mut conditions = BTreeMap::new();
            for object in listed {
                let name = object.name_any();
                let spec_valid = object.data["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|condition| condition["type"] == "SpecValid")
                    .cloned();
                if let Some(condition) = spec_valid {
                    conditions.insert(name, condition);
                }
            }
            let missing: Vec<&&str> = stored
                .iter()
                .filter(|name| !conditions.contains_key(**name))
                .collect();
            if missing.is_empty() {
                Ok(conditions)
            } else {
                Err(format!("{} without SpecValid: {missing:?}", missing.len()))
            }
        },
    )
    .await;

    let (mut refused, mut flagged, mut valid) = (0, 0, 0);
    for (mutation, seen) in &seen {
        let name = &mutation.name;
        let field = &mutation.field;
        match (seen, &mutation.expect) {
            (Seen::Refused(message), Expect::Rejected) if names_field(message, field) => {
                refused += 1;
            }
            (Seen::Refused(message), expect) => failures.push(format!(
                "{name}: refused ({message}); expected {expect:?} naming {field}"
            )),
            (Seen::Stored(object), Expect::Rejected) => {
                failures.push(format!("{name}: stored as {object}; expected a refusal"))
            }
            (Seen::Stored(object), expect) => {
                let condition = &statuses[object];
                let status = condition["status"].as_str().unwrap_or_default();
                let message = condition["message"].as_str().unwrap_or_default();
                match (expect, status) {
                    (Expect::SpecInvalid, "False") if names_field(message, field) => flagged += 1,
                    (Expect::Valid(_), "True") => valid += 1,
                    _ => failures.push(format!(
                        "{name}: stored as {object} with SpecValid={status} ({message}); \
                         expected {expect:?} naming {field}"
                    )),
                }
            }
        }
    }
    eprintln!(
        "hostile: {} mutations in {:.1}s ({:.1}s to create): {refused} refused by the API server, \
         {flagged} SpecValid=False, {valid} valid on purpose",
        all.len(),
        started.elapsed().as_secs_f64(),
        created.as_secs_f64(),
    );
    assert!(
        failures.is_empty(),
        "{} of {} mutations ended otherwise than expected:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}
