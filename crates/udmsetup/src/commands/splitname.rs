//! `splitname <name> [<subsystem>]`: an LVM device name split into its
//! VG, LV and layer (`--` stands for `-`), as a report (`-o` chooses among
//! the name-component fields). Needs no daemon.

use super::ctx::{CmdResult, Ctx};
use crate::format::report::{Report, RowData, SPLITNAME_SECTION};
use crate::format::DeviceInfo;

pub fn run(ctx: &mut Ctx, args: &[String]) -> CmdResult {
    let Some(name) = args.first() else {
        return Err(super::Failed);
    };
    let subsystem = args.get(1).cloned().unwrap_or_else(|| "LVM".to_string());
    let report = match Report::with_defaults(
        "vg_name,lv_name,lv_layer",
        ctx.opts.options.as_deref(),
        ctx.opts.noheadings,
        ctx.opts.separator.as_deref(),
    ) {
        Ok(r) => r,
        Err(e) => return ctx.fail(&e),
    };
    if let Some(f) = report
        .fields
        .iter()
        .find(|f| f.section != SPLITNAME_SECTION)
    {
        let msg = format!("_do_report_object: no data assigned to field {}", f.id);
        return ctx.fail(&msg);
    }
    let mut report = report;
    report.add_row(&RowData {
        info: DeviceInfo {
            name: name.clone(),
            ..Default::default()
        },
        subsystem: Some(subsystem),
        ..Default::default()
    });
    ctx.report = Some(report);
    Ok(())
}
