"""SIPp scenario steps shared by the tests that write their own scenarios."""

from __future__ import annotations

# The peer hangs up: SIPp receives the BYE and answers 200 OK, echoing the request's headers.
RECV_BYE_SEND_200 = """
  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""
