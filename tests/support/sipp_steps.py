"""SIPp scenario steps shared by the tests that write their own scenarios."""

from __future__ import annotations


def in_dialog_reply(status: str) -> str:
    """SIPp's answer to an in-dialog request: the status line, the request's own headers
    echoed (its To already carries the dialog's tag), no body."""
    return f"""
  <send>
    <![CDATA[
      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""


# The peer hangs up: SIPp receives the BYE and answers 200 OK, echoing the request's headers.
RECV_BYE_SEND_200 = """
  <recv request="BYE"/>""" + in_dialog_reply("200 OK")
