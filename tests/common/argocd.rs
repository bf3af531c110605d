//! Argo CD's health of a Release, as `config/argocd/health.lua` computes it.
//!
//! Argo CD runs health scripts in gopher-lua, which is a Lua 5.1; the script runs here in
//! mlua's vendored Lua 5.1 (the `lua51` feature), so a script that leans on something newer
//! (integer division `//`, `goto`, `utf8`, the bit operators) fails here as it would in Argo CD.

use mlua::LuaSerdeExt;

/// The health check script, read at run time so that an edit needs no rebuild.
pub fn script() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/argocd/health.lua");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// `(status, message)` of the script run on `object` (a Release as JSON) as the global `obj`.
/// JSON `null` becomes `nil`, so a null field and a missing one look the same to the script.
pub fn health(object: &serde_json::Value) -> (String, String) {
    let lua = mlua::Lua::new();
    let version: String = lua.globals().get("_VERSION").expect("_VERSION");
    assert_eq!(version, "Lua 5.1", "Argo CD runs gopher-lua, a Lua 5.1");
    let options = mlua::SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false)
        .set_array_metatable(false);
    let table = lua
        .to_value_with(object, options)
        .expect("the Release as a Lua table");
    lua.globals().set("obj", table).expect("obj");
    let result: mlua::Table = lua
        .load(script())
        .set_name("health.lua")
        .eval()
        .unwrap_or_else(|error| panic!("health.lua failed on {object}: {error}"));
    (
        result.get("status").expect("hs.status is a string"),
        result.get("message").expect("hs.message is a string"),
    )
}
