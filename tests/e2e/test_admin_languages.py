"""The tenant's languages from the admin console (the routing's `languages`, checked by the
router): changed alone, keeping the rest of the routing and its comments; refused with the
field; supervisors may not. Real chat and router on a real nats-server."""

from __future__ import annotations

from switchboard.chat.admin.console import with_languages

from .conftest import Platform
from .test_admin_console import Console


async def test_the_tenants_languages_change_alone_and_are_checked(platform: Platform) -> None:
    admin = await Console(platform).login("admin-1", "demo-admin-1")
    _, before = await admin.call("GET", "/api/admin/routing")
    assert "languages: [ko, zh, en, ja]" in before["yaml"]
    status, body = await admin.call("PUT", "/api/admin/languages", {"languages": ["ko", "Ko!"]})
    assert status == 400 and "languages[1]" in body["error"], body
    status, body = await admin.call(
        "PUT", "/api/admin/languages", {"languages": ["ko", "en", "vi"]}
    )
    assert status == 200, body
    _, after = await admin.call("GET", "/api/admin/routing")
    assert "languages: [ko, en, vi]" in after["yaml"]
    assert after["version"] > before["version"]
    # Only that line changed: the rest, comments included, is as it was.
    assert after["yaml"].replace("[ko, en, vi]", "[ko, zh, en, ja]") == before["yaml"]
    _, audit = await admin.call("GET", "/api/admin/audit")
    assert audit["entries"][0]["action"] == "routing.apply"
    assert "+languages: [ko, en, vi]" in audit["entries"][0]["changes"]["diff"]

    sup = await Console(platform).login("sup-1", "demo-sup-1")
    assert (await sup.call("PUT", "/api/admin/languages", {"languages": ["ko"]}))[0] == 403


def test_languages_are_put_in_the_routing_text() -> None:
    text = "# A centre\nlanguages: [ko, en]  # spoken here\nskills: [billing]\n"
    assert with_languages(text, ["ja"]) == (
        "# A centre\nlanguages: [ja]  # spoken here\nskills: [billing]\n"
    )
    assert with_languages("skills: [billing]\n", ["ko"]) == "languages: [ko]\nskills: [billing]\n"
    block = "languages:\n  - ko\n  - en\nskills: [billing]\n"
    assert with_languages(block, ["zh"]) == "languages: [zh]\nskills: [billing]\n"
