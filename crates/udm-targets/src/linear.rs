//! `linear <dev> <offset>`: maps the target onto a contiguous range of one device.
//! INFO is empty; TABLE is `<dev> <offset>`; IMA is
//! `target_name=linear,target_version=1.4.0,device_name=<dev>,start=<offset>;`.

use std::sync::Arc;

use udm_core::{
    ima_name_version, Bio, BlockDev, ExtentKind, Mapped, Sector, StatusType, TableError, Target,
    TargetCtx, TargetType,
};

pub const TYPE: TargetType = TargetType {
    name: "linear",
    version: [1, 4, 0],
    ctr,
};

pub struct Linear {
    dev: Arc<dyn BlockDev>,
    offset: Sector,
}

fn ctr(ctx: &TargetCtx<'_>, args: &[String]) -> Result<Box<dyn Target>, TableError> {
    ctx.expect_args(args, 2)?;
    let offset = Sector(ctx.u64_arg(args, 1, "offset")?);
    let dev = ctx.device(args, 0, offset, ctx.len)?;
    Ok(Box::new(Linear { dev, offset }))
}

impl Target for Linear {
    #[inline]
    fn map<'s>(&'s self, bio: Bio) -> Mapped<'s> {
        let sector = self.offset + bio.sector;
        Mapped::Remap(bio, &*self.dev, sector)
    }

    fn status(&self, kind: StatusType, out: &mut String) {
        match kind {
            StatusType::Info => {}
            StatusType::Table => {
                out.push_str(&format!("{} {}", self.dev.display_name(), self.offset));
            }
            StatusType::Ima => {
                ima_name_version(out, TYPE.name, TYPE.version);
                out.push_str(&format!(
                    ",device_name={},start={};",
                    self.dev.display_name(),
                    self.offset
                ));
            }
        }
    }

    fn devices(&self) -> Vec<Arc<dyn BlockDev>> {
        vec![self.dev.clone()]
    }

    fn extent(&self, offset: Sector, len: Sector) -> (ExtentKind, Sector) {
        let (hole, bytes) = self.dev.extent((self.offset + offset).bytes(), len.bytes());
        let kind = if hole {
            ExtentKind::Hole
        } else {
            ExtentKind::Data
        };
        (kind, Sector::from_bytes(bytes).clamp(Sector(1), len))
    }
}
