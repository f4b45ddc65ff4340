//! Commands that change settings: activate/deactivate, changeWritePolicy, modify, the
//! compression and deduplication switches, and the grows.

use uvdo::WritePolicy;

use super::Ctx;
use crate::cli::Select;
use crate::control::Request;
use crate::error::{CliError, CliResult, ExitStatus};
use crate::registry::Operation;
use crate::size::{format_size, parse_size};

pub(super) fn activate(ctx: &Ctx, name: &str, on: bool) -> CliResult<()> {
    ctx.entry(name)?;
    let value = if on { "enabled" } else { "disabled" };
    let changed = ctx.registry.update(|r| {
        let e = r.get_mut(name)?;
        let changed = e.activated != value;
        e.activated = value.into();
        Ok(changed)
    })?;
    match (on, changed) {
        (true, true) => println!("Activating VDO {name}"),
        (false, true) => println!("Deactivating VDO {name}"),
        (true, false) => println!("{name} already activated"),
        (false, false) => println!("{name} already deactivated"),
    }
    Ok(())
}

pub(super) fn change_write_policy(ctx: &Ctx, name: &str, policy: &str) -> CliResult<()> {
    let _: WritePolicy = policy
        .parse()
        .map_err(|e| CliError::usage(format!("argument --writePolicy: {e}")))?;
    ctx.entry(name)?;
    if !ctx.running(name) {
        return ctx.registry.update(|r| {
            r.get_mut(name)?.write_policy = policy.into();
            Ok(())
        });
    }
    ctx.registry.update(|r| {
        r.get_mut(name)?.operation_state = Operation::SetWritePolicy.key().into();
        Ok(())
    })?;
    ctx.call(
        name,
        &Request::ChangeWritePolicy {
            policy: policy.into(),
        },
    )?;
    ctx.registry.update(|r| {
        let e = r.get_mut(name)?;
        e.write_policy = policy.into();
        e.operation_state = Operation::Finished.key().into();
        Ok(())
    })
}

pub(super) fn modify(
    ctx: &Ctx,
    select: &Select,
    cache: Option<&str>,
    tcp_port: Option<u16>,
) -> CliResult<()> {
    if cache.is_none() && tcp_port.is_none() {
        return Err(CliError::usage(
            "options must be specified from: --blockMapCacheSize, --tcpPort",
        ));
    }
    let cache = cache.map(|c| parse_size(c, false)).transpose()?;
    ctx.each(select, |name| {
        ctx.entry(name)?;
        ctx.registry.update(|r| {
            let e = r.get_mut(name)?;
            if let Some(bytes) = cache {
                e.block_map_cache_size = format_size(bytes);
            }
            if let Some(port) = tcp_port {
                e.tcp_port = (port != 0).then_some(port);
            }
            Ok(())
        })?;
        if ctx.running(name) {
            println!("Note: Changes will not apply until VDO {name} is restarted");
        }
        Ok(())
    })
}

fn switch_setting(ctx: &Ctx, name: &str, on: bool, compression: bool) -> CliResult<()> {
    ctx.entry(name)?;
    let value = if on { "enabled" } else { "disabled" };
    ctx.registry.update(|r| {
        let e = r.get_mut(name)?;
        if compression {
            e.compression = value.into();
        } else {
            e.deduplication = value.into();
        }
        Ok(())
    })?;
    let what = if compression {
        "compression"
    } else {
        "deduplication"
    };
    let verb = if on { "Starting" } else { "Stopping" };
    if ctx.running(name) {
        println!("{verb} {what} on VDO {name}");
        let request = if compression {
            Request::SetCompression { enabled: on }
        } else {
            Request::SetDeduplication { enabled: on }
        };
        let note = ctx.call(name, &request)?;
        if let Some(note) = note.as_str() {
            println!("Note: {note}");
        }
    } else if compression {
        println!("Note: compression is not implemented yet; the setting is stored");
    }
    Ok(())
}

pub(super) fn compression(ctx: &Ctx, name: &str, on: bool) -> CliResult<()> {
    switch_setting(ctx, name, on, true)
}

pub(super) fn dedupe(ctx: &Ctx, name: &str, on: bool) -> CliResult<()> {
    switch_setting(ctx, name, on, false)
}

/// `growLogical` (`Some(size)`) or `growPhysical` (`None`: into the whole device) on a
/// running volume: the registry records `beginGrow*` first, the daemon grows the volume
/// (durable before it answers), then the registry takes the sizes it answers with and
/// `finished`. A refused grow (exit 5 or 7: nothing changed) resets the state at once; any
/// other failure leaves it for the next command to repair from what the volume records.
pub(super) fn grow(ctx: &Ctx, name: &str, size: Option<&str>) -> CliResult<()> {
    let bytes = size.map(|s| parse_size(s, true)).transpose()?;
    ctx.entry(name)?;
    if !ctx.running(name) {
        return Err(CliError::state(format!("VDO volume {name} is not running")));
    }
    let (request, operation) = match bytes {
        Some(bytes) => (Request::GrowLogical { bytes }, Operation::GrowLogical),
        None => (Request::GrowPhysical, Operation::GrowPhysical),
    };
    ctx.registry.update(|r| {
        r.get_mut(name)?.operation_state = operation.key().into();
        Ok(())
    })?;
    let answer = ctx.call(name, &request);
    let sizes = match answer {
        Ok(sizes) => sizes,
        Err(e) => {
            if matches!(e.status, ExitStatus::User | ExitStatus::State) {
                ctx.registry.update(|r| {
                    r.get_mut(name)?.operation_state = Operation::Finished.key().into();
                    Ok(())
                })?;
            }
            return Err(e);
        }
    };
    let size_of = |key: &str| sizes[key].as_u64().map(format_size);
    ctx.registry.update(|r| {
        let e = r.get_mut(name)?;
        if let Some(logical) = size_of("logicalBytes") {
            e.logical_size = logical;
        }
        if let Some(physical) = size_of("physicalBytes") {
            e.physical_size = physical;
        }
        e.operation_state = Operation::Finished.key().into();
        Ok(())
    })
}
