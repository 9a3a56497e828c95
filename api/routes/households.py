"""Registered households (户): watched elderly residents' homes, with personal data.

Residents' and emergency contacts' names and phones are shown to admins, the
control room and the grid workers of the household's grid; viewers see them
masked (王**, 138****2001).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel
from sqlalchemy import select

from api.access import Principal
from api.crud import (
    Page,
    check_grid,
    get_or_404,
    in_community,
    mask_name,
    mask_phone,
    paginate,
    writing,
)
from api.deps import (
    AdminUser,
    CommunityQuery,
    CurrentUser,
    PagingDep,
    RowId,
    SessionDep,
    StateDep,
    in_scope,
)
from registry.document import CareSpec, ContactSpec, Label
from registry.models import Building, Household, Unit

router = APIRouter(prefix="/api/v1/households", tags=["registry"])


class Contact(BaseModel):
    """A person to reach (masked unless your role needs it)."""

    name: str | None
    phone: str | None


class HouseholdPublic(BaseModel):
    """A household, its care profile, resident and emergency contact."""

    id: int
    unit: int
    room: str
    care: dict[str, Any]
    resident: Contact
    emergency_contact: Contact
    masked: bool

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "id": 5,
                    "unit": 20,
                    "room": "501",
                    "care": {"watched": True, "no_use_hours": 12},
                    "resident": {"name": "王**", "phone": "138****2001"},
                    "emergency_contact": {"name": "王*", "phone": "138****3001"},
                    "masked": True,
                }
            ]
        }
    }


class HouseholdCreate(BaseModel):
    """A new registered household behind a unit door."""

    unit: RowId
    room: Label
    resident: ContactSpec | None = None
    emergency_contact: ContactSpec | None = None
    care: CareSpec = CareSpec()


class HouseholdUpdate(BaseModel):
    """Fields to change."""

    resident: ContactSpec | None = None
    emergency_contact: ContactSpec | None = None
    care: CareSpec | None = None


def _contact(name: str | None, phone: str | None, masked: bool) -> Contact:
    return (
        Contact(name=mask_name(name), phone=mask_phone(phone))
        if masked
        else Contact(name=name, phone=phone)
    )


def household_public(row: Household, principal: Principal) -> HouseholdPublic:
    """The public view of a household; personal data masked unless the role needs it."""
    masked = not principal.sees_personal_data
    return HouseholdPublic(
        id=row.id,
        unit=row.unit_id,
        room=row.room,
        care=row.care,
        resident=_contact(row.resident_name, row.resident_phone, masked),
        emergency_contact=_contact(row.contact_name, row.contact_phone, masked),
        masked=masked,
    )


def _set_people(row: Household, body: HouseholdCreate | HouseholdUpdate) -> None:
    fields = body.model_fields_set
    if "resident" in fields:
        person = body.resident
        row.resident_name = person.name if person else None
        row.resident_phone = person.phone if person else None
    if "emergency_contact" in fields:
        person = body.emergency_contact
        row.contact_name = person.name if person else None
        row.contact_phone = person.phone if person else None
    if body.care is not None:
        row.care = body.care.model_dump(exclude_none=True)


@router.get("", response_model=Page[HouseholdPublic])
def list_households(
    principal: CurrentUser,
    session: SessionDep,
    paging: PagingDep,
    community: CommunityQuery = None,
    unit: RowId | None = None,
) -> Page[HouseholdPublic]:
    """Households you may see (a grid worker: those in their grids)."""
    query = in_community(
        select(Household).join(Unit).join(Building).order_by(Household.id),
        Building.community_id,
        principal,
        community,
    )
    if unit is not None:
        query = query.where(Household.unit_id == unit)
    if principal.grid_scoped:
        query = query.where(Building.grid_id.in_(principal.grid_ids))
    return paginate(session, query, paging, lambda row: household_public(row, principal))


@router.post("", response_model=HouseholdPublic, status_code=201, responses={409: {}})
def create_household(body: HouseholdCreate, admin: AdminUser, state: StateDep) -> HouseholdPublic:
    """Register a household."""
    with writing(state) as session:
        get_or_404(session, Unit, body.unit, "unit")
        row = Household(unit_id=body.unit, room=body.room)
        _set_people(row, body)
        session.add(row)
        session.flush()
        return household_public(row, admin)


@router.get("/{household_id}", response_model=HouseholdPublic, responses={404: {}})
def read_household(
    household_id: RowId, principal: CurrentUser, session: SessionDep
) -> HouseholdPublic:
    """One household."""
    row = get_or_404(session, Household, household_id, "household")
    building = session.scalars(select(Building).join(Unit).where(Unit.id == row.unit_id)).one()
    in_scope(principal, building.community_id, f"household {household_id}")
    check_grid(principal, building.grid_id, f"household {household_id}")
    return household_public(row, principal)


@router.patch("/{household_id}", response_model=HouseholdPublic, responses={404: {}})
def update_household(
    household_id: RowId, body: HouseholdUpdate, admin: AdminUser, state: StateDep
) -> HouseholdPublic:
    """Change the resident, the emergency contact or the care profile."""
    with writing(state) as session:
        row = get_or_404(session, Household, household_id, "household")
        _set_people(row, body)
        return household_public(row, admin)


@router.delete("/{household_id}", status_code=204, responses={404: {}, 409: {}})
def delete_household(household_id: RowId, _: AdminUser, state: StateDep) -> Response:
    """Remove a household (409 while a meter is placed there)."""
    with writing(state) as session:
        session.delete(get_or_404(session, Household, household_id, "household"))
    return Response(status_code=204)
